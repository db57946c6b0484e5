"""pytest plugin: with ``MINDPET_REQUIRE_FUSED=1`` a test skipped for want of the native kernels fails.

Tests of the fused kernels skip where the native library was not built or does not load (a developer
machine without a compiler), with a reason naming it. CI sets ``MINDPET_REQUIRE_FUSED=1`` (``.ci/run``):
there such a skip means a broken build and is reported as a failure, so CI cannot go green on it.
Registered by ``tests/conftest.py``; loadable on its own with ``-p fused_requirement``.
"""
from __future__ import annotations

import os

import pytest

ENV = "MINDPET_REQUIRE_FUSED"
# The reasons with which the tests skip when the native part is missing.
NATIVE_SKIP_REASONS = ("kernel library not built", "could not import 'mindpet._native'")


def required() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def _is_native_skip(report) -> bool:
    return report.skipped and any(reason in str(report.longrepr) for reason in NATIVE_SKIP_REASONS)


def _fail(report) -> None:
    reason = str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"{ENV}=1, but this test was skipped because the native kernels are missing: {reason}. "
                       f"Build them (pip install . / python setup.py build_ext --inplace) or unset {ENV}.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
    outcome = yield
    report = outcome.get_result()
    if required() and _is_native_skip(report):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # pylint: disable=unused-argument
    outcome = yield
    report = outcome.get_result()
    if required() and _is_native_skip(report):  # a module-level importorskip
        _fail(report)


def pytest_report_header(config):  # pylint: disable=unused-argument
    return f"{ENV}={'1: skips for missing native kernels fail' if required() else '0'}"
