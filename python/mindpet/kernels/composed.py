"""Composed implementations of the fused ops: MindSpore primitives only, differentiated by autodiff.

One function per op. They define the results every fused implementation must reproduce
(``ops/CONTRACTS.md``), and they are what the delta layers run when composed: a layer passes its own
primitives (the keyword arguments after the tensors), so ``shard`` strategies set on them apply, and
what runs on GPU or after ``shard`` is exactly what the fused kernels are tested against. Plain
functions of tensors, usable in PYNATIVE mode and inside ``construct`` in GRAPH mode. Shapes: ``x``/``h``
are 2-D ``[M, *]``; the tensors of a call share one dtype (a ``residual`` may have another). The
composed ``activation`` is :class:`~mindpet.kernels.activations.ComposedActivation` or a layer's own.
"""
from __future__ import annotations

from mindspore import ops
from mindspore.common import dtype as mstype

_matmul = ops.MatMul()
_matmul_nt = ops.MatMul(transpose_b=True)
_bias_add = ops.BiasAdd()
_add = ops.Add()
_mul = ops.Mul()
_cast = ops.Cast()


def _round(t, round_to):
    """``t`` rounded to ``round_to`` and carried in its own dtype (None: unchanged); emulates bfloat16 on CPU."""
    if round_to is None:
        return t
    return _cast(_cast(t, round_to), t.dtype)


def dense_composed(x, weight, bias, matmul=_matmul_nt, bias_add=_bias_add, round_to=None):
    r"""``y = x W^T + b`` (``nn.Dense`` without activation): x ``[M, K]``, weight ``[N, K]``, bias ``[N]`` or None.

    ``round_to``: None, or a dtype the matmul result is rounded to (see :func:`lora_linear_composed`).
    """
    y = _round(matmul(x, weight), round_to)
    if bias is not None:
        y = bias_add(y, bias)
    return y


def lora_linear_composed(x, weight, bias, lora_a, lora_b, scale, mask=None, x_d=None, matmul=_matmul_nt,
                         bias_add=_bias_add, lora_a_matmul=_matmul_nt, lora_b_matmul=_matmul_nt, mul=_mul,
                         add=_add, round_to=None):
    r"""``y = x W^T + b + s (x_d A^T) B^T``.

    Shapes: x ``[M, K]``, weight ``[N, K]``, bias ``[N]`` or None, lora_a ``[R, K]``, lora_b ``[N, R]``,
    mask ``[M, K]`` (values 0 or 1/(1-p)) or None; returns ``[M, N]``. ``x_d`` is ``x * mask``, or the
    given ``x_d`` (a layer's Dropout output), or ``x``. ``scale`` is a number or a 0-d Tensor.
    ``round_to``: None, or a dtype (bfloat16) each matmul result is rounded to while the arithmetic runs in
    the tensors' dtype (float32): how a layer emulates a bfloat16 compute dtype where MatMul lacks it.
    """
    y = dense_composed(x, weight, bias, matmul, bias_add, round_to)
    if x_d is None:
        x_d = x if mask is None else x * mask
    u = _round(lora_a_matmul(x_d, lora_a), round_to)
    delta = _round(lora_b_matmul(u, lora_b), round_to)
    return add(y, mul(delta, scale))


def _residual(h, delta, residual, residual_add):
    """``h + delta``, or ``residual + delta`` in the residual's dtype when a residual is given."""
    if residual is None:
        return residual_add(h, delta)
    return residual_add(residual, _cast(delta, residual.dtype))


def adapter_composed(h, w_down, b_down, w_up, b_up, activation, residual=None, matmul_down=_matmul_nt,
                     bias_add_down=_bias_add, matmul_up=_matmul_nt, bias_add_up=_bias_add, residual_add=_add):
    r"""``y = r + act(h W_down^T + b_down) W_up^T + b_up`` with ``r = h`` (or ``residual``).

    Shapes: h ``[M, D]``, w_down ``[B, D]``, b_down ``[B]``, w_up ``[D, B]``, b_up ``[D]``; ``activation``
    is a Cell or Primitive. ``residual``: the layer's input ``[M, D]`` in its own dtype, when ``h`` is
    that input cast to a compute dtype: the bottleneck is cast to the residual's dtype and added there.
    """
    z = bias_add_down(matmul_down(h, w_down), b_down)
    delta = bias_add_up(matmul_up(activation(z), w_up), b_up)
    return _residual(h, delta, residual, residual_add)


def low_rank_adapter_composed(h, down_left, down_right, b_down, up_left, up_right, b_up, activation,
                              residual=None, matmul_down_input=_matmul, matmul_down_weight=_matmul,
                              bias_add_down=_bias_add, matmul_up_input=_matmul, matmul_up_weight=_matmul,
                              bias_add_up=_bias_add, residual_add=_add):
    r"""``y = r + act(h L_dl L_dr + b_down) L_ul L_ur + b_up``, through the factors (never ``L_dl L_dr``).

    Shapes: h ``[M, D]``, down_left ``[D, R]``, down_right ``[R, B]``, b_down ``[B]``, up_left ``[B, R]``,
    up_right ``[R, D]``, b_up ``[D]``; ``r`` and ``residual`` as in :func:`adapter_composed`.
    """
    z = bias_add_down(matmul_down_weight(matmul_down_input(h, down_left), down_right), b_down)
    delta = bias_add_up(matmul_up_weight(matmul_up_input(activation(z), up_left), up_right), b_up)
    return _residual(h, delta, residual, residual_add)


def layer_norm_primitive(epsilon: float) -> ops.LayerNorm:
    """MindSpore's LayerNorm over the last dim (what ``nn.LayerNorm((D,), epsilon=...)`` runs)."""
    return ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=float(epsilon))


def layer_norm_composed(x, gamma, beta, norm, residual=None):
    r"""``y = (s - mean) / sqrt(var + eps) * gamma + beta`` over the last dim, ``s = x + residual`` (or ``x``).

    Shapes: x ``[*, D]``, residual like x or None, gamma/beta ``[D]``; ``norm`` is
    :func:`layer_norm_primitive` ``(eps)``. Returns ``[*, D]``.
    """
    s = x if residual is None else x + residual
    y, _, _ = norm(s, gamma, beta)
    return y


def dequantize_composed(codes, scales, offsets, lut, bits: int, group_size: int, dtype):
    r"""``W [N, K]`` in ``dtype`` from the unified quantised layout (``ops/CONTRACTS.md`` section 6), MindSpore ops only.

    ``v = codes`` (bits 8, int8 ``[N, K]``), ``v = lut[nibble]`` (bits 4, uint8 ``[N, K // 2]``: element ``2j`` in
    the low nibble of byte ``j``, ``2j + 1`` in the high one) or ``v = lut[nibble + 16 * fifth bit]`` (bits 5, uint8
    ``[N, K // 2 + K // 8]``: the nibbles as bits 4, then bit ``k % 8`` of byte ``K // 2 + k // 8``); ``W = v *
    scales + offsets`` per group of ``group_size`` consecutive k (scales, offsets float16 ``[N, K // G]``;
    ``offsets``/``lut`` None or a 1-element stand-in when absent), computed in float32 and cast to ``dtype`` once.
    No gradient flows into the quantised tensors (``stop_gradient``): they are never trainable.
    """
    n = codes.shape[0]
    if bits in (4, 5):
        c = _cast(codes, mstype.int32)
        half = c.shape[1] if bits == 4 else c.shape[1] // 5 * 4  # bytes of nibbles: K // 2
        nibbles = ops.stack((c[:, :half] % 16, c[:, :half] // 16), axis=-1).reshape((n, -1))  # [N, K]
        if bits == 5:
            high = c[:, half:]
            fifth = ops.stack([(high // (1 << b)) % 2 for b in range(8)], axis=-1)  # bit k % 8 of byte k // 8
            nibbles = nibbles + fifth.reshape((n, -1)) * 16
        v = ops.gather(lut, nibbles, 0)
    else:
        v = _cast(codes, mstype.float32)
    k = v.shape[1]
    groups = k // group_size
    w = v.reshape((n, groups, group_size)) * _cast(scales, mstype.float32).reshape((n, groups, 1))
    if offsets is not None and offsets.size > 1:
        w = w + _cast(offsets, mstype.float32).reshape((n, groups, 1))
    return ops.stop_gradient(_cast(w.reshape((n, k)), dtype))


def quant_lora_linear_composed(x, codes, scales, offsets, lut, bias, lora_a, lora_b, scale, bits: int,
                               group_size: int, mask=None):
    r"""``y = x deq(W)^T + b + s (x_d A^T) B^T``: :func:`dequantize_composed`, then :func:`lora_linear_composed`.

    Shapes: x ``[M, K]``, the quantised W as in :func:`dequantize_composed`, bias ``[N]`` or None, lora_a
    ``[R, K]`` / lora_b ``[N, R]`` (both None: no LoRA term), mask like x or None. The reference of the fused
    op and the GPU path; it materialises the dequantised ``W`` in the dtype of ``x``. No gradient flows into
    the quantised tensors nor the bias (frozen with the base).
    """
    weight = dequantize_composed(codes, scales, offsets, lut, bits, group_size, x.dtype)
    if bias is not None:
        bias = ops.stop_gradient(bias)  # the bias of a quantised base is frozen with it
    if lora_a is None:
        return dense_composed(x, weight, bias)
    return lora_linear_composed(x, weight, bias, lora_a, lora_b, scale, mask)




def rms_norm_composed(x, gamma, epsilon: float, residual=None):
    r"""``y = s / sqrt(mean(s^2) + eps) * gamma`` over the last dim, ``s = x + residual`` (or ``x``).

    Shapes: x ``[*, D]``, residual like x or None, gamma ``[D]``. Returns ``y`` without a residual,
    ``(y, s)`` with one (the sum, e.g. the next residual stream of a pre-norm block).
    """
    s = x if residual is None else x + residual
    y = s * ops.rsqrt(ops.mean(s * s, -1, keep_dims=True) + epsilon) * gamma
    return y if residual is None else (y, s)


def swiglu_composed(gate, up):
    r"""``y = silu(gate) * up = gate * sigmoid(gate) * up`` elementwise (gate and up of one shape)."""
    return gate * ops.sigmoid(gate) * up


__all__ = ["dense_composed", "lora_linear_composed", "adapter_composed", "low_rank_adapter_composed",
           "layer_norm_primitive", "layer_norm_composed", "dequantize_composed", "quant_lora_linear_composed",
           "rms_norm_composed", "swiglu_composed"]
