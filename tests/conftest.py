"""Shared pytest fixtures: MindSpore execution modes and deterministic seeds; test output kept out of the tree."""
import os

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


@pytest.fixture(autouse=True, scope="session")
def _mindspore_dumps_out_of_the_tree(tmp_path_factory):
    """MindSpore writes ``rank_<id>/om/analyze_fail.ir`` under ``MS_OM_PATH`` (default: the working directory)
    whenever a graph fails to compile, which many error tests do: point it at a session temp dir (read when
    the file is written; inherited by subprocesses). A value set by the user is kept."""
    if "MS_OM_PATH" in os.environ:
        yield
        return
    os.environ["MS_OM_PATH"] = str(tmp_path_factory.mktemp("mindspore_om"))
    yield
    del os.environ["MS_OM_PATH"]
