"""The attention core through the selected backend (``ops/CONTRACTS.md`` 9): ``softmax(scale Q K^T + bias) V``.

:class:`AttentionCore` takes the heads already split and rotated, grouped-query style (``Hk`` KV heads, each
shared by ``H / Hk`` query heads), and an additive ``[L, S]`` mask. The fused CPU op keeps only ``Q, K, V``, the
output and a float32 log-sum-exp per query row for its backward (which recomputes the probabilities); composed,
autodiff keeps the repeated keys/values, the scores and the probabilities (``[B, H, L, S]`` each). GPU and Ascend
run composed.
"""
from __future__ import annotations

from typing import Optional

from mindspore import ops

from mindpet.kernels import _primitives
from mindpet.kernels.fused_op import FusedOp

__all__ = ["AttentionCore", "attention_composed"]


def _repeat_kv(x, groups: int):
    """``[B, Hk, S, d] -> [B, Hk * groups, S, d]``: query head ``i`` uses KV head ``i // groups``."""
    if groups == 1:
        return x
    b, n, length, d = x.shape
    x = ops.broadcast_to(ops.expand_dims(x, 2), (b, n, groups, length, d))
    return ops.reshape(x, (b, n * groups, length, d))


def attention_composed(q, k, v, bias, scale: float):
    r"""``softmax(scale q k^T + bias, -1) v`` with KV heads repeated for grouped-query attention.

    Shapes: q ``[B, H, L, d]``, k/v ``[B, Hk, S, d]`` (``H`` a multiple of ``Hk``), bias ``[L, S]``;
    returns ``[B, H, L, d]``.
    """
    groups = q.shape[1] // k.shape[1]
    k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale + bias
    return ops.matmul(ops.softmax(scores, axis=-1), v)


class AttentionCore(FusedOp):
    r"""``o = softmax(scale Q K^T + bias) V`` per head, grouped-query (one fused op when available).

    Args:
        scale: the score scale, e.g. ``1 / sqrt(head_dim)``.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Inputs: ``q [B, H, L, d]``, ``k [B, Hk, S, d]``, ``v [B, Hk, S, d]`` (``H`` a multiple of ``Hk``), ``bias [L, S]``
    (additive mask, e.g. 0 / -1e9; treated as a constant: no gradient), one dtype (float32/float16 fused).
    Output: ``o [B, H, L, d]``.
    """

    op_name = "attention"

    def __init__(self, scale: float, backend: Optional[str] = None):
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"'scale' must be a float, but got {type(scale).__name__}.")
        self.scale = float(scale)
        self.select_backend(backend, cpu_only=True)
        if self.fused:
            self.fwd = _primitives.attention_forward(self.impl)

    def construct(self, q, k, v, bias):
        if q.shape[1] % k.shape[1] != 0:
            raise ValueError("For 'attention', the query heads must be a multiple of the key/value heads.")
        if bias.dtype != q.dtype:
            bias = ops.cast(bias, q.dtype)
        if not self.runs_fused(q.dtype):
            return attention_composed(q, k, v, bias, self.scale)
        o, _ = self.fwd(q, k, v, bias, self.scale)
        return o

    def extend_repr(self) -> str:
        return f"scale={self.scale}, impl={self.impl}"
