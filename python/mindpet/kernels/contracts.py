"""The fused-op contracts on the Python side: one table for every backend (``ops/CONTRACTS.md``).

Per contract op (``lora_linear_fwd``, ..., ``dropout_mask_fwd``): the CPU kernel's aot symbol, the Ascend
op type (None for the CPU-only ops), the number of inputs (tensors, then the scalar attributes), the
number of outputs, the output shapes as a function of the input shapes, and the outputs that are
float32 whatever the input dtype. The activation codes of the ``activation`` attribute are here too.
``ops/include/mindpet/contracts.h`` is the C++ twin; ``mindpet._native.contracts`` exports it and
``tests/kernels/test_kernel_contracts.py`` checks that both sides agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

Shape = Sequence[int]

IDENTITY, RELU, GELU, GELU_ERF, SIGMOID, TANH, SILU = range(7)
ACTIVATION_CODES: Dict[str, int] = {
    "identity": IDENTITY, "relu": RELU, "gelu": GELU, "gelu_erf": GELU_ERF,
    "sigmoid": SIGMOID, "tanh": TANH, "silu": SILU,
}


@dataclass(frozen=True)
class OpContract:
    """One fused op of the contract (see the module docstring)."""

    name: str
    cpu_symbol: str
    ascend_op_type: Optional[str]
    num_inputs: int
    num_outputs: int
    shapes: Callable[..., list]
    float32_outputs: Tuple[int, ...] = ()

    def out_shapes(self, *input_shapes: Shape) -> tuple:
        """The output shapes (lists) for the given input shapes, one per output."""
        return tuple(self.shapes(*input_shapes))

    def out_dtypes(self, first, *_) -> tuple:
        """The output dtypes: the dtype of the first input, float32 for :attr:`float32_outputs`.

        Written without comprehensions: MindSpore may parse ``out_dtype`` functions as graph code, where a
        comprehension cannot see the enclosing function's variables.
        """
        from mindspore.common import dtype as mstype  # pylint: disable=import-outside-toplevel  (lazy: see ascend)
        dtypes = []
        for i in range(self.num_outputs):
            dtypes.append(mstype.float32 if i in self.float32_outputs else first)
        return tuple(dtypes)


def _lora_fwd(x, w, b, a, bb, mask, *attrs):
    return [[x[0], w[0]], [x[0], a[0]]]


def _lora_bwd(dy, x, w, a, bb, u, mask, *attrs):
    return [list(x), list(a), list(bb)]


def _lora_bwd_weights(dy, x, b, u, mask, *attrs):
    return [[b[1], x[1]], list(b), [x[0], b[1]]]


def _lora_bwd_input(dy, w, a, g, mask, *attrs):
    return [[dy[0], w[1]]]


def _adapter_fwd(h, wd, bd, wu, bu, *attrs):
    return [list(h), [h[0], wd[0]]]


def _adapter_bwd(dy, h, wd, wu, z, *attrs):
    return [list(h), list(wd), [wd[0]], list(wu), [wu[0]]]


def _lra_fwd(h, dl, dr, bd, ul, ur, bu, *attrs):
    return [list(h), [h[0], dl[1]], [h[0], dr[1]], [h[0], ul[1]]]


def _lra_bwd(dy, h, dl, dr, ul, ur, t, z, q, *attrs):
    return [list(h), list(dl), list(dr), [dr[1]], list(ul), list(ur), [ur[1]]]


def _activation_fwd(x, *attrs):
    return [list(x)]


def _activation_bwd(dy, x, *attrs):
    return [list(x)]


def _layer_norm_fwd(x, r, g, b, *attrs):
    return [list(x), [x[0]], [x[0]]]


def _layer_norm_bwd(dy, x, r, g, mean, rstd, *attrs):
    return [list(x), list(g), list(g)]


def _quant_lora_fwd(x, codes, scales, offsets, lut, bias, a, bb, mask, *attrs):
    # u is [M, R], or [M, 1] when has_lora is 0 (lora_a is then the 1-element stand-in)
    return [[x[0], codes[0]], [x[0], a[0]]]


def _quant_lora_bwd_input(dy, x_cols, *rest):
    return [[dy[0], x_cols[-1]]]  # dx [M, K]: M from dy, K from the [*, K] stand-in


def _attention_fwd(q, k, v, cos, sin, *attrs):
    length, head_dim = cos[0], cos[1]  # cos [L, D]; q [B*L, NH*D]
    return [list(q), [q[0] // length, q[1] // head_dim, length]]


def _attention_bwd(dout, q, k, v, cos, sin, out, lse, *attrs):
    return [list(q), list(k), list(v)]


def _attention_masked_fwd(q, k, v, cos, sin, key_mask, seed, *attrs):
    return _attention_fwd(q, k, v, cos, sin)


def _attention_masked_bwd(dout, q, k, v, cos, sin, key_mask, seed, out, lse, *attrs):
    return [list(q), list(k), list(v)]


def _rms_norm_fwd(x, r, g, *attrs):
    return [list(x), list(r), [x[0]]]


def _rms_norm_bwd(dy, dh, s, g, rstd, *attrs):
    return [list(s), list(g)]


def _swiglu_fwd(gate, up, *attrs):
    return [list(gate)]


def _swiglu_bwd(dy, gate, up, *attrs):
    return [list(gate), list(gate)]


def _dropout_mask_fwd(x, *rest):
    return [list(x)]


OPS: Dict[str, OpContract] = {c.name: c for c in (
    OpContract("lora_linear_fwd", "LoraLinearForward", "MindpetLoraLinear", 9, 2, _lora_fwd),
    OpContract("lora_linear_bwd", "LoraLinearBackward", "MindpetLoraLinearGrad", 9, 3, _lora_bwd),
    # the backward split in two (CPU only): dA, dB and g = dy B (float32), then dx from g
    OpContract("lora_linear_bwd_weights", "LoraLinearBackwardWeights", None, 7, 3, _lora_bwd_weights,
               float32_outputs=(2,)),
    OpContract("lora_linear_bwd_input", "LoraLinearBackwardInput", None, 7, 1, _lora_bwd_input),
    OpContract("adapter_fwd", "AdapterForward", "MindpetAdapter", 6, 2, _adapter_fwd),
    OpContract("adapter_bwd", "AdapterBackward", "MindpetAdapterGrad", 6, 5, _adapter_bwd),
    OpContract("low_rank_adapter_fwd", "LowRankAdapterForward", "MindpetLowRankAdapter", 8, 4, _lra_fwd),
    OpContract("low_rank_adapter_bwd", "LowRankAdapterBackward", "MindpetLowRankAdapterGrad", 10, 7, _lra_bwd),
    OpContract("activation_fwd", "ActivationForward", None, 2, 1, _activation_fwd),
    OpContract("activation_bwd", "ActivationBackward", None, 3, 1, _activation_bwd),
    OpContract("layer_norm_fwd", "LayerNormForward", None, 6, 3, _layer_norm_fwd, float32_outputs=(1, 2)),
    OpContract("layer_norm_bwd", "LayerNormBackward", None, 7, 3, _layer_norm_bwd),
    # y = x deq(W)^T + b + s (x_d A^T) B^T on a quantised W (CPU only); its weight gradients are
    # lora_linear_bwd_weights, its input gradient the op below
    OpContract("quant_lora_linear_fwd", "QuantLoraLinearForward", None, 16, 2, _quant_lora_fwd),
    OpContract("quant_lora_linear_bwd_input", "QuantLoraLinearBackwardInput", None, 15, 1, _quant_lora_bwd_input),
    OpContract("attention_fwd", "AttentionForward", None, 10, 2, _attention_fwd, float32_outputs=(1,)),
    OpContract("attention_bwd", "AttentionBackward", None, 13, 3, _attention_bwd),
    # section 9b: with a key-padding mask [B, L] int32 and dropout on p from a seed [2] int32
    OpContract("attention_masked_fwd", "AttentionMaskedForward", None, 13, 2, _attention_masked_fwd,
               float32_outputs=(1,)),
    OpContract("attention_masked_bwd", "AttentionMaskedBackward", None, 16, 3, _attention_masked_bwd),
    # y, h = x + r (shape of the residual: [1] without one), rstd (float32)
    OpContract("rms_norm_fwd", "RmsNormForward", None, 5, 3, _rms_norm_fwd, float32_outputs=(2,)),
    OpContract("rms_norm_bwd", "RmsNormBackward", None, 6, 2, _rms_norm_bwd),
    OpContract("swiglu_fwd", "SwiGluForward", None, 2, 1, _swiglu_fwd),
    OpContract("swiglu_bwd", "SwiGluBackward", None, 3, 2, _swiglu_bwd),
    # section 10: the mask of x's shape from a counter hash of (seed, offset + i); forward only
    OpContract("dropout_mask_fwd", "DropoutMaskForward", None, 4, 1, _dropout_mask_fwd),
)}
OP_NAMES = tuple(OPS)
# fused ops (forward + backward) with a CPU kernel only: GPU and Ascend run them composed
CPU_ONLY_OPS = ("activation", "layer_norm", "quant_lora_linear", "attention", "rms_norm", "swiglu", "dropout_mask")


def contract(name: str) -> OpContract:
    """The contract of op ``name`` (one of :data:`OP_NAMES`); ValueError for another name."""
    if name not in OPS:
        raise ValueError(f"unknown fused op {name!r}; known: {OP_NAMES}")
    return OPS[name]
