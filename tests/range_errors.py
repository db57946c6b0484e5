"""``pytest.raises`` for an out-of-range index, by execution mode (shared by the PromptTuning and RDropLoss
tests).

Eager (PYNATIVE): a ValueError naming the argument. Compiled (GRAPH mode, ``ms.jit``): MindSpore's Assert
kernel stops the graph with RuntimeError "assert failed" (a Python raise there cannot coexist with the
``ops.Custom`` kernels of the fused layers). A module beside the root conftest, so ``tests/`` is on
``sys.path`` and every test directory can import it.
"""
import mindspore as ms
import pytest


def raises_compiled_range_error():
    """The check inside a compiled graph (GRAPH mode or an ``ms.jit`` function)."""
    return pytest.raises(RuntimeError, match="assert failed")


def raises_range_error(mode, value_error_match: str):
    """The check in a network run in ``mode``: eager in PYNATIVE, compiled in GRAPH mode."""
    if mode == ms.PYNATIVE_MODE:
        return pytest.raises(ValueError, match=value_error_match)
    return raises_compiled_range_error()
