"""``GradSafeCell``: the base of every mindpet Cell, so that an error raised in an eager call is recoverable.

MindSpore 2.10's PYNATIVE executor records the autodiff graph while a forward runs under
``GradOperation`` (``nn.TrainOneStepCell``, ``ms.value_and_grad``). An exception escaping that forward
(a shape or dtype check, an out-of-range id) leaves the recording half-built, and a later, unrelated
training step in the same process then fails (seen: "For LayerNormGrad, the index 7 is out of range of
input num 7"). MindSpore clears that state itself when a ``jit`` compilation fails; ``GradSafeCell``
does the same when one of its eager calls raises, then re-raises the error unchanged.
"""
from __future__ import annotations

from mindspore import nn

from mindpet._mindspore import clear_pynative_grad_state, is_pynative


class GradSafeCell(nn.Cell):
    """``nn.Cell`` whose eager (PYNATIVE) call clears the autodiff recording before an error propagates.

    Only the Python-level call is wrapped: inside a compiled graph the cell is inlined from its
    ``construct`` and nothing changes; in GRAPH mode a failed compilation is cleaned up by MindSpore.
    """

    def __call__(self, *args, **kwargs):
        if not is_pynative():
            return super().__call__(*args, **kwargs)
        try:
            return super().__call__(*args, **kwargs)
        except Exception:
            clear_pynative_grad_state()
            raise
