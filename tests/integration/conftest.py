"""Integration tests: the repository root on ``sys.path`` (for ``benchmarks``) and a PYNATIVE fixture."""
import sys
from pathlib import Path

import pytest
import mindspore as ms

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # the repository's ``benchmarks`` package (BERT port, HF name table)
    sys.path.insert(0, _ROOT)


@pytest.fixture
def pynative():
    """PYNATIVE mode for the test, GRAPH restored afterwards."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)
