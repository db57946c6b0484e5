"""``GradSafeCell``: the base of every mindpet Cell, so that an error raised in an eager call is recoverable.

MindSpore 2.10's PYNATIVE executor records the autodiff graph while a forward runs under
``GradOperation`` (``nn.TrainOneStepCell``, ``ms.value_and_grad``). An exception escaping that forward
(a shape or dtype check, an out-of-range id) leaves the recording half-built, and a later, unrelated
training step in the same process then fails (seen: "For LayerNormGrad, the index 7 is out of range of
input num 7"). MindSpore clears that state itself when a ``jit`` compilation fails; ``GradSafeCell``
does the same when one of its eager calls raises, then re-raises the error unchanged.
"""
from __future__ import annotations

from mindspore import context, nn


def reset_pynative_grad_state() -> None:
    """Drop MindSpore's half-recorded PYNATIVE autodiff graph. Private API: skipped if it is missing."""
    try:
        from mindspore.graph.api import _pynative_executor  # pylint: disable=import-outside-toplevel
        _pynative_executor.clear_res()
    except (ImportError, AttributeError, RuntimeError):
        pass


class GradSafeCell(nn.Cell):
    """``nn.Cell`` whose eager (PYNATIVE) call clears the autodiff recording before an error propagates.

    Only the Python-level call is wrapped: inside a compiled graph the cell is inlined from its
    ``construct`` and nothing changes; in GRAPH mode a failed compilation is cleaned up by MindSpore.
    """

    def __call__(self, *args, **kwargs):
        if context._get_mode() != context.PYNATIVE_MODE:  # pylint: disable=protected-access
            return super().__call__(*args, **kwargs)
        try:
            return super().__call__(*args, **kwargs)
        except Exception:
            reset_pynative_grad_state()
            raise
