"""CI cannot go green on a broken build (issue 19, part 3).

- ``MINDPET_REQUIRE_FUSED=1`` (set by ``.ci/run``) turns a skip for missing native kernels into a failure
  (``tests/fused_requirement.py``).
- The spec-coverage test finds the spec in ``$MINDPET_SPEC_DIR`` or beside the repository, and fails on a
  wrong ``MINDPET_SPEC_DIR`` instead of skipping.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import test_spec_exceptions as spec_test

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

SKIPPING = '''
import pytest
pytest.skip("could not import 'mindpet._native': No module named 'mindpet._native'", allow_module_level=True)
'''
SKIPPING_TEST = '''
import pytest

def test_fused():
    pytest.skip("mindpet CPU kernel library not built")

def test_other_skip():
    pytest.skip("msrun is not installed")
'''


def _run_pytest(tmp_path: Path, files: dict, require: str) -> str:
    """The summary line of pytest run on ``files`` with only the fused_requirement plugin."""
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not the repository's configuration
    env = dict(os.environ, MINDPET_REQUIRE_FUSED=require, PYTHONPATH=str(TESTS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "fused_requirement", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    return proc.stdout.strip().splitlines()[-1]


def test_required_fused_kernels_turn_native_skips_into_failures(tmp_path):
    summary = _run_pytest(tmp_path, {"test_fused.py": SKIPPING_TEST}, "1")
    assert "1 failed" in summary and "1 skipped" in summary, summary  # the unrelated skip stays a skip


def test_required_native_module_missing_is_a_collection_error(tmp_path):
    summary = _run_pytest(tmp_path, {"test_native_module.py": SKIPPING}, "1")
    assert "1 error" in summary, summary


def test_without_the_requirement_the_skips_stay(tmp_path):
    summary = _run_pytest(tmp_path, {"test_fused.py": SKIPPING_TEST, "test_native_module.py": SKIPPING}, "0")
    assert "3 skipped" in summary and "failed" not in summary and "error" not in summary, summary


def test_ci_run_requires_the_fused_kernels_and_points_at_the_spec():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "export MINDPET_REQUIRE_FUSED=1" in script
    assert "../shared/spec" in script and "MINDPET_SPEC_DIR" in script


def _spec_tree(root: Path) -> Path:
    (root / "repo").mkdir(parents=True)
    spec = root / "shared" / "spec"
    spec.mkdir(parents=True)
    (spec / spec_test.SPEC_FILE).write_text("spec", encoding="utf-8")
    return spec / spec_test.SPEC_FILE


def test_spec_is_found_beside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("MINDPET_SPEC_DIR", raising=False)
    expected = _spec_tree(tmp_path)
    assert spec_test._spec_path(tmp_path / "repo") == expected  # pylint: disable=protected-access


def test_spec_dir_variable_wins_and_must_hold_the_spec(tmp_path, monkeypatch):
    expected = _spec_tree(tmp_path / "elsewhere")
    monkeypatch.setenv("MINDPET_SPEC_DIR", str(expected.parent))
    assert spec_test._spec_path(tmp_path / "nowhere") == expected  # pylint: disable=protected-access
    monkeypatch.setenv("MINDPET_SPEC_DIR", str(tmp_path / "empty"))
    with pytest.raises(pytest.fail.Exception, match="MINDPET_SPEC_DIR"):
        spec_test._spec_path()  # pylint: disable=protected-access


def test_without_spec_the_coverage_test_skips(tmp_path, monkeypatch):
    monkeypatch.delenv("MINDPET_SPEC_DIR", raising=False)
    (tmp_path / "repo").mkdir()
    with pytest.raises(pytest.skip.Exception):
        spec_test._spec_path(tmp_path / "repo")  # pylint: disable=protected-access
