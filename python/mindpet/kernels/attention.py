"""The ``attention`` core (``ops/CONTRACTS.md`` 9): rotary, grouped-query scaled-dot-product attention with an
optional causal mask, in the projections' own layout (no transposes).

For batch ``b``, query head ``h`` (kv head ``g = h // (NH / NKV)``), rows ``i``/``j`` of the sequence:
``qr = rot(q_bh)``, ``kr = rot(k_bg)`` with ``rot(x) = x cos + rotate_half(x) sin`` (``rotate_half(x) =
[-x2, x1]``, the HF/LLaMA convention; or ``x`` without rotary), ``s_ij = scale qr_i . kr_j`` (``-inf`` for
``j > i`` when causal), ``out_bh = softmax_j(s) v_bg``.

With a key-padding mask (``key_mask [B, L]``, nonzero = visible; section 9b, as BERT's ``attention_mask``, not
necessarily a prefix) the keys ``j`` with ``key_mask[b, j] == 0`` get probability 0; a query row that sees no
key at all (every key masked, or causal and the keys up to it masked) gives a zero output row and zero
gradients (the softmax over an empty set taken as all-zero weights; its log-sum-exp is ``-inf``). With
``dropout = p > 0`` in training, the probabilities are dropped and scaled by ``1 / (1 - p)`` after the
softmax (BERT's attention-probability dropout); the fused kernel draws its mask from a counter hash of a
per-call seed and regenerates it in the backward, so no mask is stored.

:class:`Attention` runs the fused CPU kernel (one op per direction; the backward recomputes the
probabilities from q, k and the saved row log-sum-exp, flash-attention style, so neither the ``[L, L]``
scores nor MindSpore's transposes and broadcasts and their per-element index tables are kept) or the
composed reference :func:`attention_composed` (MindSpore ops, as a LLaMA attention writes it; GPU, Ascend,
bfloat16, ``backend='composed'``).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from mindspore import Tensor, ops
from mindspore.common import dtype as mstype
from mindspore.common.seed import _get_graph_seed

from mindpet.kernels import _primitives
from mindpet.kernels.fused_op import FusedOp

__all__ = ["Attention", "attention_composed"]

MASK_VALUE = -1e9


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int, but got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"'{name}' must be >= 1, but got {value}.")
    return value


def _rotate_half(x):
    half = x.shape[-1] // 2
    return ops.concat((-x[..., half:], x[..., :half]), -1)


def attention_composed(q, k, v, cos, sin, num_heads: int, num_kv_heads: int, scale: float, causal: bool,
                       key_mask=None, dropout: float = 0.0):
    """The reference, composed of MindSpore ops: q ``[B, L, NH*D]``, k and v ``[B, L, NKV*D]``, cos and sin
    ``[L, D]`` or None (no rotary), key_mask ``[B, L]`` or None, dropout applied when > 0 (MindSpore's own
    random mask, not the kernel's); returns ``[B, L, NH*D]`` (see the module docstring)."""
    b, length, width = q.shape
    head_dim = width // num_heads
    groups = num_heads // num_kv_heads

    def heads(x, n):
        return ops.transpose(ops.reshape(x, (b, length, n, head_dim)), (0, 2, 1, 3))

    def repeat_kv(x):
        if groups == 1:
            return x
        x = ops.broadcast_to(ops.expand_dims(x, 2), (b, num_kv_heads, groups, length, head_dim))
        return ops.reshape(x, (b, num_heads, length, head_dim))

    qh, kh, vh = heads(q, num_heads), heads(k, num_kv_heads), heads(v, num_kv_heads)
    if cos is not None:
        qh = qh * cos + _rotate_half(qh) * sin
        kh = kh * cos + _rotate_half(kh) * sin
    kh, vh = repeat_kv(kh), repeat_kv(vh)
    scores = ops.matmul(qh, ops.transpose(kh, (0, 1, 3, 2))) * scale
    if causal:
        pos = ops.arange(length)
        visible = ops.expand_dims(pos, 0) <= ops.expand_dims(pos, 1)
        bias = ops.select(visible, ops.zeros((length, length), scores.dtype),
                          ops.fill(scores.dtype, (length, length), MASK_VALUE))
        scores = scores + bias
    if key_mask is None:
        probs = ops.softmax(scores, axis=-1)
    else:
        keys = ops.reshape(ops.cast(key_mask != 0, mstype.float32), (b, 1, 1, length))  # 1 = visible
        allowed = ops.broadcast_to(keys, (b, 1, length, length))
        if causal:
            pos = ops.arange(length)
            allowed = allowed * ops.cast(ops.expand_dims(pos, 0) <= ops.expand_dims(pos, 1), mstype.float32)
        seen = ops.amax(allowed, -1, True)  # [B, 1, L, 1]: 1 where query i sees a key
        # a row without a visible key: every key allowed (finite softmax, in float16 too), then weights 0
        allowed = ops.broadcast_to(ops.maximum(allowed, 1.0 - seen) > 0.5, scores.shape)
        scores = ops.select(allowed, scores, ops.fill(scores.dtype, scores.shape, float("-inf")))
        probs = ops.softmax(scores, axis=-1) * ops.cast(seen, scores.dtype)
    if dropout > 0:
        probs = ops.dropout(probs, p=dropout, training=True)
    context = ops.matmul(probs, vh)
    return ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (b, length, width))


class Attention(FusedOp):
    r"""``softmax(scale rot(q) rot(k)^T + mask) v`` per head, grouped-query, in the projections' layout.

    Args:
        num_heads: query heads ``NH``.
        head_dim: ``D`` (even when rotary is used).
        num_kv_heads: key/value heads ``NKV`` (divides ``NH``; default ``NH``); query head ``h`` uses kv head
            ``h // (NH / NKV)``.
        scale: the score scale (default ``1 / sqrt(D)``).
        causal: key ``j`` is visible to query ``i`` only when ``j <= i``.
        dropout: probability ``p`` in ``[0, 1)`` of dropping an attention probability in training (kept ones
            are scaled by ``1 / (1 - p)``; the Cell's ``training`` flag decides, as ``nn.Dropout``).
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Inputs: q ``[B, L, NH*D]``, k and v ``[B, L, NKV*D]``, optional cos and sin ``[L, D]`` (rotary tables;
    both or neither; their gradients are zero), optional key_mask ``[B, L]`` (bool, int or float; nonzero =
    key visible; zero gradient). Output ``[B, L, NH*D]`` in the dtype of q (cos and sin are
    cast to it). float32/float16 fused on CPU (float32 accumulation), other dtypes and devices composed.
    """

    op_name = "attention"

    def __init__(self, num_heads: int, head_dim: int, num_kv_heads: Optional[int] = None,
                 scale: Optional[float] = None, causal: bool = True, backend: Optional[str] = None,
                 dropout: float = 0.0):
        super().__init__()
        self.num_heads = _positive_int(num_heads, "num_heads")
        self.head_dim = _positive_int(head_dim, "head_dim")
        self.num_kv_heads = self.num_heads if num_kv_heads is None else _positive_int(num_kv_heads, "num_kv_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"'num_heads' ({self.num_heads}) must be a multiple of 'num_kv_heads' "
                             f"({self.num_kv_heads}).")
        if scale is None:
            scale = 1.0 / math.sqrt(self.head_dim)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"'scale' must be a float, but got {type(scale).__name__}.")
        self.scale = float(scale)
        if not isinstance(causal, bool):
            raise TypeError(f"'causal' must be a bool, but got {type(causal).__name__}.")
        self.causal = causal
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"'dropout' must be a float, but got {type(dropout).__name__}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), but got {dropout}.")
        self.dropout = float(dropout)
        self.select_backend(backend, cpu_only=True)
        if self.fused:
            self.fwd = _primitives.attention_forward(self.impl)
            self.fwd_masked = _primitives.attention_masked_forward(self.impl)
            seed0, seed1 = _get_graph_seed(0, "dropout")  # as nn.Dropout: reproducible under ms.set_seed
            self.draw_seed = ops.UniformInt(seed=seed0, seed2=seed1)
            self.no_seed = Tensor(np.zeros(2, np.int32))

    def _seed(self, dropout: float):
        """The kernel's dropout seed: a fresh int32 [2] draw per call in training with dropout, else zeros."""
        if dropout > 0:
            return self.draw_seed((2,), Tensor(-2 ** 31, mstype.int32), Tensor(2 ** 31 - 1, mstype.int32))
        return self.no_seed

    def _check(self, q, k, v, cos, sin, key_mask=None):
        """TypeError/ValueError naming the argument (shapes are static: checked when the graph is built)."""
        if len(q.shape) != 3 or q.shape[2] != self.num_heads * self.head_dim:
            raise ValueError(f"For 'Attention', 'q' must be [B, L, num_heads * head_dim] = [B, L, "
                             f"{self.num_heads * self.head_dim}], but got {q.shape}.")
        kv_shape = (q.shape[0], q.shape[1], self.num_kv_heads * self.head_dim)
        if k.shape != kv_shape:
            raise ValueError(f"For 'Attention', 'k' must be [B, L, num_kv_heads * head_dim] = {kv_shape}, "
                             f"but got {k.shape}.")
        if v.shape != kv_shape:
            raise ValueError(f"For 'Attention', 'v' must be [B, L, num_kv_heads * head_dim] = {kv_shape}, "
                             f"but got {v.shape}.")
        if k.dtype != q.dtype or v.dtype != q.dtype:
            raise TypeError("For 'Attention', 'q', 'k' and 'v' must share one dtype.")
        if (cos is None) != (sin is None):
            raise ValueError("For 'Attention', give both 'cos' and 'sin' (rotary) or neither.")
        if cos is not None:
            table = (q.shape[1], self.head_dim)
            if cos.shape != table:
                raise ValueError(f"For 'Attention', 'cos' must be [L, head_dim] = {table}, but got {cos.shape}.")
            if sin.shape != table:
                raise ValueError(f"For 'Attention', 'sin' must be [L, head_dim] = {table}, but got {sin.shape}.")
            if self.head_dim % 2:
                raise ValueError(f"For 'Attention', rotary needs an even 'head_dim', but got {self.head_dim}.")
        if key_mask is not None and key_mask.shape != (q.shape[0], q.shape[1]):
            raise ValueError(f"For 'Attention', 'key_mask' must be [B, L] = {(q.shape[0], q.shape[1])}, but got "
                             f"{key_mask.shape}.")

    def construct(self, q, k, v, cos=None, sin=None, key_mask=None):
        self._check(q, k, v, cos, sin, key_mask)
        if cos is not None and cos.dtype != q.dtype:
            cos = ops.cast(cos, q.dtype)
            sin = ops.cast(sin, q.dtype)
        dropout = self.dropout if self.training else 0.0
        if not self.runs_fused(q.dtype):
            return attention_composed(q, k, v, cos, sin, self.num_heads, self.num_kv_heads, self.scale, self.causal,
                                      key_mask, dropout)
        b, length, width = q.shape
        rotary = 1
        if cos is None:  # shape carriers only: the kernel reads L and D from them, not their values
            rotary = 0
            cos = ops.zeros((length, self.head_dim), q.dtype)
            sin = cos
        flat = (q.reshape((b * length, width)), k.reshape((b * length, -1)), v.reshape((b * length, -1)), cos, sin)
        causal = 1 if self.causal else 0
        if key_mask is None and dropout == 0:
            out, _ = self.fwd(*flat, self.num_heads, self.num_kv_heads, self.scale, causal, rotary)
            return out.reshape((b, length, width))
        if key_mask is None:
            key_mask = ops.ones((b, length), mstype.int32)
        elif key_mask.dtype != mstype.int32:
            key_mask = ops.cast(key_mask != 0, mstype.int32)
        out, _ = self.fwd_masked(*flat, key_mask, self._seed(dropout), self.num_heads, self.num_kv_heads, self.scale,
                                 causal, rotary, dropout)
        return out.reshape((b, length, width))

    def extend_repr(self) -> str:
        return (f"num_heads={self.num_heads}, head_dim={self.head_dim}, num_kv_heads={self.num_kv_heads}, "
                f"scale={self.scale}, causal={self.causal}, dropout={self.dropout}, impl={self.impl}")
