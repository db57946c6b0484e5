r"""R-Drop (Liang et al., 2021): cross-entropy plus a symmetric KL between two dropout passes.

Usage: duplicate every example with :func:`rdrop_repeat` (rows ``2i`` and ``2i + 1`` are example ``i``),
run the model once on the doubled batch (dropout draws a different mask for each copy), and replace
the cross-entropy loss with :class:`RDropLoss`.

Loss, for logits ``z`` of shape (2N, C), rows ``2i`` and ``2i + 1`` being the two passes of example ``i``::

    p_r   = softmax(z_r)                                       (log_softmax is applied to the input)
    CE    = 1/(2N) * sum_r  -sum_c y_rc log p_rc               (y one-hot for class indices)
    KL    = 1/(4N) * sum_i  [KL(p_2i || p_2i+1) + KL(p_2i+1 || p_2i)]
          = 1/(4N) * sum_i sum_c (p_2i,c - p_2i+1,c) (log p_2i,c - log p_2i+1,c)
    loss  = CE + alpha * KL

This is exactly half the paper's per-example objective (eq. 3, averaged over the batch):
``L_i = -log P1(y_i) - log P2(y_i) + alpha * (KL(P1||P2) + KL(P2||P1)) / 2``, so ``alpha`` has the
paper's meaning and the loss is on the scale of one cross-entropy. The original package used the
same constants but summed the KL over the batch instead of averaging (it grew with the batch size);
the paper's reference snippet also sums. Averaging keeps ``alpha`` independent of the batch size.

Inputs are interpreted as unnormalised scores: ``log_softmax`` is applied to them. The spec asks for
log-probabilities; ``log_softmax`` leaves log-probabilities unchanged, so both work.
"""
from __future__ import annotations

from typing import Tuple

import mindspore as ms
from mindspore import Tensor, ops

from mindpet._eager import GradSafeCell
from mindpet.delta._validation import check_bool, check_indices_in_range

__all__ = ["RDropLoss", "rdrop_repeat"]

_INDEX_DTYPES = (ms.int32, ms.int64)
_FLOAT_DTYPES = (ms.float16, ms.float32)


def rdrop_repeat(*tensors: Tensor) -> Tuple[Tensor, ...]:
    """Duplicate every row: output rows ``2i`` and ``2i + 1`` are input row ``i``.

    Each input (any rank >= 1, any dtype) of shape (N, ...) becomes (2N, ...). Always returns a tuple,
    one output per input (``x, = rdrop_repeat(x)`` for one tensor). Works eagerly and inside
    ``construct`` in both GRAPH and PYNATIVE mode.

    Raises:
        TypeError: an input is not a Tensor. ValueError: no input, or an input of rank 0.
    """
    if not tensors:
        raise ValueError("For 'rdrop_repeat', at least one Tensor must be given.")
    out = ()
    for item in tensors:
        if not isinstance(item, Tensor):
            raise TypeError(f"For 'rdrop_repeat', every input must be a Tensor, but got {type(item)}.")
        if item.ndim < 1:
            raise ValueError("For 'rdrop_repeat', every input must have rank >= 1, but got a scalar Tensor.")
        doubled = ops.stack((item, item), 1)
        out += (doubled.reshape((item.shape[0] * 2,) + item.shape[1:]),)
    return out


class RDropLoss(GradSafeCell):
    r"""Cross-entropy over the doubled batch plus ``alpha`` times the symmetric KL of each pair.

    ``construct(logits, label_ids, alpha=4)`` with (see the module docstring for the formula):

    - **logits** (Tensor) - (2N, C), float16 or float32: scores (or log-probabilities) of the doubled
      batch from :func:`rdrop_repeat`; rows ``2i`` and ``2i + 1`` are the two passes of example ``i``.
    - **label_ids** (Tensor) - class indices, int32 (int64 accepted), of shape (2N,) or (2N, 1); or class
      probabilities, float16/float32, of shape (2N, C).
    - **alpha** (int or float) - weight of the KL term, >= 0. Default: 4.

    Returns a scalar Tensor of the dtype of ``logits`` (computed in float32).

    Args:
        check_labels: check on every call that class indices are in [0, C) (see below). Default: True.
            Keyword only.

    Raises:
        TypeError: ``check_labels`` not a bool; ``alpha`` not an int or float (bool included); ``logits``
            not float16/float32; ``label_ids`` neither int32/int64 nor float16/float32.
        ValueError: ``alpha`` negative; ``logits`` not 2-D or with an odd number of rows; ``label_ids``
            of the wrong shape; (``check_labels``) a class index outside [0, C) (eagerly; compiled: see below).

    Checks: ``alpha``, dtypes and shapes are checked in both modes (in GRAPH mode when the graph
    compiles). With ``check_labels`` the range of class indices is checked on every call in both modes,
    also inside a compiled training step (an unchecked out-of-range index silently drops its row from
    the cross-entropy). Run eagerly (PYNATIVE) the labels are read on the host (ValueError); compiled
    (GRAPH mode, ``ms.jit``) MindSpore's ``Assert`` kernel, ordered before the loss uses the labels,
    stops the graph with ``RuntimeError: assert failed`` (a Python raise there cannot coexist with
    ``ops.Custom`` kernels in MindSpore 2.10), after which MindSpore refuses to run that compiled graph
    again ("An error occurred in the previous step"; a new network or a recompilation runs).
    ``check_labels=False`` removes the check (compiled out in GRAPH mode). Probability labels are never
    checked (any float values are used as given).
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        super().__init__()
        check_bool(check_labels, "check_labels", "RDropLoss")
        self.check_labels = check_labels

    def construct(self, logits: Tensor, label_ids: Tensor, alpha=4) -> Tensor:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"For 'RDropLoss', 'alpha' must be an int or float, but got {alpha}.")
        if alpha < 0:
            raise ValueError(f"For 'RDropLoss', 'alpha' must be >= 0, but got {alpha}.")
        if logits.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"For 'RDropLoss', 'logits' must be float16 or float32, but got {logits.dtype}.")
        if logits.ndim != 2 or logits.shape[0] % 2 != 0:
            raise ValueError(f"For 'RDropLoss', 'logits' must have shape (2N, C) (rows 2i and 2i+1 the two "
                             f"passes of example i), but got {logits.shape}.")
        rows, classes = logits.shape
        log_p = ops.log_softmax(logits.astype(ms.float32), -1)
        if label_ids.dtype in _INDEX_DTYPES:
            if label_ids.size != rows or label_ids.ndim > 2:
                raise ValueError(f"For 'RDropLoss', class-index 'label_ids' must have shape ({rows},) or "
                                 f"({rows}, 1), but got {label_ids.shape}.")
            if self.check_labels:
                label_ids = check_indices_in_range(label_ids, classes, "label_ids", "RDropLoss")
            target = ops.one_hot(label_ids.reshape((rows,)).astype(ms.int32), classes,
                                 Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        elif label_ids.dtype in _FLOAT_DTYPES:
            if label_ids.shape != logits.shape:
                raise ValueError(f"For 'RDropLoss', probability 'label_ids' must have the shape of 'logits' "
                                 f"{logits.shape}, but got {label_ids.shape}.")
            target = label_ids.astype(ms.float32)
        else:
            raise TypeError(f"For 'RDropLoss', 'label_ids' must be int32 class indices or float16/float32 "
                            f"probabilities, but got {label_ids.dtype}.")
        ce = -(target * log_p).sum() / rows
        pairs = log_p.reshape((rows // 2, 2, classes))
        log_a, log_b = pairs[:, 0], pairs[:, 1]
        kl = ((ops.exp(log_a) - ops.exp(log_b)) * (log_a - log_b)).sum() / (2 * rows)
        return (ce + alpha * kl).astype(logits.dtype)
