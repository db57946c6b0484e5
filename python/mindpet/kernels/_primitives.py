"""The fused ops as ``ops.Custom`` primitives, and the ``bprop`` glue shared by every fused backend.

Inputs, outputs and saved tensors follow the contract table :mod:`mindpet.kernels.contracts`
(``ops/CONTRACTS.md``): tensors first, then the attributes as trailing scalar arguments. The forward
primitive carries a ``bprop`` that calls the backward primitive of the same implementation (``'cpu'``:
``ops.Custom(func_type='aot')`` on ``libmindpet_cpu_kernels.so``; ``'ascend'``:
``mindpet.kernels.ascend.primitive``). A ``bprop`` returns a gradient for every input: attributes get zeros, and the base ``weight``/``bias`` of
``lora_linear`` get ``dy^T x`` / ``sum_M dy`` from separate primitives, which GRAPH mode prunes when
they are frozen (PYNATIVE asks for the ``base_grads=False`` variant instead, which returns zeros).
``activation``, ``layer_norm``, ``quant_lora_linear``, ``attention``, ``rms_norm``, ``swiglu`` and
``dropout_mask`` (``contracts.CPU_ONLY_OPS``) have CPU primitives only; the saved LayerNorm / RMSNorm statistics and the
attention's log-sum-exp are float32 whatever the input dtype.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable, Optional

import numpy as np
from mindspore import Tensor, ops

from mindpet.kernels import _library, contracts

# the lora_linear backward split in two (CPU only; the other backends run the one-pass backward)
SPLIT_BACKWARD = {"cpu": ("lora_linear_bwd_weights", "lora_linear_bwd_input")}


def _cpu_out_shape(op: contracts.OpContract) -> Callable:
    """Output shapes for ``ops.Custom``: a single-output op gives one shape (the primitive then returns a Tensor)."""
    if op.num_outputs == 1:
        return lambda *shapes: op.out_shapes(*shapes)[0]
    return op.out_shapes


def _cpu_out_dtype(op: contracts.OpContract) -> Callable:
    """Output dtypes from input dtypes (:meth:`OpContract.out_dtypes`; one dtype for a single output)."""
    if op.num_outputs == 1:
        return lambda first, *_: first
    return op.out_dtypes


def _cpu_primitive(op: contracts.OpContract, bprop: Optional[Callable] = None):
    return ops.Custom(f"{_library.load()}:{op.cpu_symbol}", out_shape=_cpu_out_shape(op),
                      out_dtype=_cpu_out_dtype(op), func_type="aot", bprop=bprop)


def primitive(impl: str, name: str, bprop: Optional[Callable] = None):
    """The primitive ``name`` (one of :data:`~mindpet.kernels.contracts.OP_NAMES`) of implementation ``impl``."""
    op = contracts.contract(name)
    if impl == "cpu":
        return _cpu_primitive(op, bprop)
    if impl == "ascend" and op.ascend_op_type is not None:
        ascend = importlib.import_module("mindpet.kernels.ascend")
        return ascend.primitive(name, bprop=bprop)
    raise ValueError(f"no fused primitive for implementation {impl!r}")


@functools.lru_cache(maxsize=None)
def lora_linear_forward(impl: str, base_grads: bool = True):
    """``lora_linear`` forward with its fused backward; ``base_grads=False`` returns zero dW, db.

    On CPU the backward is two primitives, the weight gradients (``dA``, ``dB`` and ``g = dy B``) and
    the input gradient (``dx`` from ``g``), so GRAPH mode drops the input one when nobody needs ``dx``
    (as it drops the base gradients of a frozen weight)."""
    matmul_tn = ops.MatMul(transpose_a=True)
    reduce_sum = ops.ReduceSum()
    zeros_like = ops.ZerosLike()
    split = SPLIT_BACKWARD.get(impl)
    if split is None:
        bwd = primitive(impl, "lora_linear_bwd")

        def lora_grads(dy, x, weight, lora_a, lora_b, u, mask, scale, has_mask):
            return bwd(dy, x, weight, lora_a, lora_b, u, mask, scale, has_mask)
    else:
        bwd_weights, bwd_input = primitive(impl, split[0]), primitive(impl, split[1])

        def lora_grads(dy, x, weight, lora_a, lora_b, u, mask, scale, has_mask):
            d_a, d_b, g = bwd_weights(dy, x, lora_b, u, mask, scale, has_mask)
            return bwd_input(dy, weight, lora_a, g, mask, scale, has_mask), d_a, d_b

    def bprop(x, weight, bias, lora_a, lora_b, mask, scale, has_bias, has_mask, out, dout):
        dy = dout[0]
        dx, d_a, d_b = lora_grads(dy, x, weight, lora_a, lora_b, out[1], mask, scale, has_mask)
        if base_grads:
            d_weight = matmul_tn(dy, x)
            d_bias = reduce_sum(dy, 0) if has_bias else zeros_like(bias)
        else:
            d_weight = zeros_like(weight)
            d_bias = zeros_like(bias)
        return dx, d_weight, d_bias, d_a, d_b, zeros_like(mask), scale * 0, has_bias * 0, has_mask * 0

    return primitive(impl, "lora_linear_fwd", bprop)


@functools.lru_cache(maxsize=None)
def adapter_forward(impl: str):
    """``adapter`` forward with its fused backward."""
    bwd = primitive(impl, "adapter_bwd")

    def bprop(h, w_down, b_down, w_up, b_up, activation, out, dout):
        dh, d_wd, d_bd, d_wu, d_bu = bwd(dout[0], h, w_down, w_up, out[1], activation)
        return dh, d_wd, d_bd, d_wu, d_bu, activation * 0

    return primitive(impl, "adapter_fwd", bprop)


@functools.lru_cache(maxsize=None)
def low_rank_adapter_forward(impl: str):
    """``low_rank_adapter`` forward with its fused backward."""
    bwd = primitive(impl, "low_rank_adapter_bwd")

    def bprop(h, down_left, down_right, b_down, up_left, up_right, b_up, activation, out, dout):
        grads = bwd(dout[0], h, down_left, down_right, up_left, up_right, out[1], out[2], out[3], activation)
        return grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6], activation * 0

    return primitive(impl, "low_rank_adapter_fwd", bprop)


@functools.lru_cache(maxsize=None)
def activation_forward(impl: str):
    """Elementwise ``activation`` forward with its fused backward (``dx = dy * act'(x)``)."""
    bwd = primitive(impl, "activation_bwd")

    def bprop(x, activation, out, dout):
        return bwd(dout, x, activation), activation * 0

    return primitive(impl, "activation_fwd", bprop)


@functools.lru_cache(maxsize=None)
def layer_norm_forward(impl: str):
    """``layer_norm`` (optional fused residual) forward with its fused backward; the residual gets ``dx``."""
    bwd = primitive(impl, "layer_norm_bwd")
    zeros_like = ops.ZerosLike()

    def bprop(x, residual, gamma, beta, epsilon, has_residual, out, dout):
        dx, d_gamma, d_beta = bwd(dout[0], x, residual, gamma, out[1], out[2], has_residual)
        d_residual = dx if has_residual else zeros_like(residual)
        return dx, d_residual, d_gamma, d_beta, epsilon * 0, has_residual * 0

    return primitive(impl, "layer_norm_fwd", bprop)


@functools.lru_cache(maxsize=None)
def quant_lora_linear_forward(impl: str):
    """``quant_lora_linear`` forward (``ops/CONTRACTS.md`` section 6) with its backward: one primitive per
    implementation, with and without LoRA.

    The bprop reads the variant from the call's ``has_lora`` input (a constant, so GRAPH mode keeps only one
    branch). With LoRA the backward is lora_linear's weights op (``dA``, ``dB`` and ``g = dy B``; it needs no W);
    without, ``dA``/``dB`` are zeros of the stand-ins and no ``g`` is computed. Then the input op ``dx = dy deq(W)
    + s (g A) * mask``, which GRAPH mode drops when nobody needs ``dx``. The quantised tensors and the bias get
    zero gradients (never trainable). (One primitive, not one per variant: MindSpore 2.10 gives every
    ``ops.Custom`` on the same aot kernel in one GRAPH graph the bprop of one of them; measured, a LoRA layer
    next to a plain quantised layer got ``dB = 0``.)"""
    zeros_like = ops.ZerosLike()
    zeros = ops.Zeros()
    bwd_input = primitive(impl, "quant_lora_linear_bwd_input")
    bwd_weights = primitive(impl, "lora_linear_bwd_weights")
    no_g = Tensor(np.zeros(1, np.float32))

    def bprop(x, codes, scales, offsets, lut, bias, lora_a, lora_b, mask, scale, group_size, bits, has_offsets,
              has_bias, has_lora, has_mask, out, dout):
        dy = dout[0]
        if has_lora:
            d_a, d_b, g = bwd_weights(dy, x, lora_b, out[1], mask, scale, has_mask)
        else:
            d_a, d_b, g = zeros_like(lora_a), zeros_like(lora_b), no_g
        # K through a [1, K] stand-in, not x: a layer without LoRA then keeps no input alive for its backward
        x_cols = zeros((1, x.shape[-1]), x.dtype)
        dx = bwd_input(dy, x_cols, codes, scales, offsets, lut, lora_a, g, mask, scale, group_size, bits,
                       has_offsets, has_lora, has_mask)
        return (dx, zeros_like(codes), zeros_like(scales), zeros_like(offsets), zeros_like(lut), zeros_like(bias),
                d_a, d_b, zeros_like(mask), scale * 0, group_size * 0, bits * 0, has_offsets * 0, has_bias * 0,
                has_lora * 0, has_mask * 0)

    return primitive(impl, "quant_lora_linear_fwd", bprop)


@functools.lru_cache(maxsize=None)
def attention_forward(impl: str):
    """``attention`` core forward with its fused backward (dq, dk, dv; zeros for cos, sin and the attributes)."""
    bwd = primitive(impl, "attention_bwd")
    zeros_like = ops.ZerosLike()

    def bprop(q, k, v, cos, sin, num_heads, num_kv_heads, scale, causal, rotary, out, dout):
        dq, dk, dv = bwd(dout[0], q, k, v, cos, sin, out[0], out[1], num_heads, num_kv_heads, scale, causal, rotary)
        return (dq, dk, dv, zeros_like(cos), zeros_like(sin), num_heads * 0, num_kv_heads * 0, scale * 0, causal * 0,
                rotary * 0)

    return primitive(impl, "attention_fwd", bprop)


@functools.lru_cache(maxsize=None)
def attention_masked_forward(impl: str):
    """``attention_masked`` forward (key-padding mask, dropout from a seed) with its fused backward, which
    regenerates the dropout mask from the same seed (dq, dk, dv; zeros for the rest)."""
    bwd = primitive(impl, "attention_masked_bwd")
    zeros_like = ops.ZerosLike()

    def bprop(q, k, v, cos, sin, key_mask, seed, num_heads, num_kv_heads, scale, causal, rotary, dropout, out,
              dout):
        dq, dk, dv = bwd(dout[0], q, k, v, cos, sin, key_mask, seed, out[0], out[1], num_heads, num_kv_heads, scale,
                         causal, rotary, dropout)
        return (dq, dk, dv, zeros_like(cos), zeros_like(sin), zeros_like(key_mask), zeros_like(seed), num_heads * 0,
                num_kv_heads * 0, scale * 0, causal * 0, rotary * 0, dropout * 0)

    return primitive(impl, "attention_masked_fwd", bprop)


@functools.lru_cache(maxsize=None)
def rms_norm_forward(impl: str):
    """``rms_norm`` (optional fused residual returning ``h = x + r``) forward with its fused backward.

    The backward reads the normalised sum from the forward's ``h`` output (with a residual) or from ``x``,
    and only the float32 ``rstd`` is saved; ``dx`` (plus the incoming gradient of ``h``) is also the
    residual's gradient."""
    bwd = primitive(impl, "rms_norm_bwd")
    zeros_like = ops.ZerosLike()

    def bprop(x, residual, gamma, epsilon, has_residual, out, dout):
        if has_residual:
            dx, d_gamma = bwd(dout[0], dout[1], out[1], gamma, out[2], has_residual)
            return dx, dx, d_gamma, epsilon * 0, has_residual * 0
        dx, d_gamma = bwd(dout[0], dout[1], x, gamma, out[2], has_residual)
        return dx, zeros_like(residual), d_gamma, epsilon * 0, has_residual * 0

    return primitive(impl, "rms_norm_fwd", bprop)


@functools.lru_cache(maxsize=None)
def swiglu_forward(impl: str):
    """``swiglu`` forward (``silu(gate) * up``) with its fused backward (``dgate``, ``dup``; nothing saved)."""
    bwd = primitive(impl, "swiglu_bwd")

    def bprop(gate, up, out, dout):
        return bwd(dout, gate, up)

    return primitive(impl, "swiglu_fwd", bprop)


@functools.lru_cache(maxsize=None)
def dropout_mask_forward(impl: str):
    """``dropout_mask`` (``ops/CONTRACTS.md`` 10): forward only; its bprop gives zeros (the mask has no gradient)."""
    zeros_like = ops.ZerosLike()

    def bprop(x, seed, offset, p, out, dout):
        return zeros_like(x), zeros_like(seed), zeros_like(offset), p * 0

    return primitive(impl, "dropout_mask_fwd", bprop)
