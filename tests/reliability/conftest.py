"""Fixtures of the reliability tests."""
import pytest
import mindspore as ms


@pytest.fixture
def pynative():
    """PYNATIVE mode (no compilation: fast for many tiny calls); GRAPH restored afterwards."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)
