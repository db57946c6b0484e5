"""Shared pytest fixtures: MindSpore execution modes and deterministic seeds."""
import numpy as np
import pytest
import mindspore as ms

# MINDPET_REQUIRE_FUSED=1: a skip for missing native kernels fails (hooks of tests/fused_requirement.py).
from fused_requirement import (pytest_make_collect_report, pytest_report_header,  # noqa: F401
                               pytest_runtest_makereport)


@pytest.fixture(params=[ms.GRAPH_MODE, ms.PYNATIVE_MODE], ids=["graph", "pynative"])
def mode(request):
    """Run the test once in GRAPH mode and once in PYNATIVE mode (CPU)."""
    ms.set_context(mode=request.param, device_target="CPU")
    yield request.param
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture(autouse=True)
def _seed():
    """Deterministic numpy and MindSpore random state for every test."""
    np.random.seed(0)
    ms.set_seed(0)
    yield

