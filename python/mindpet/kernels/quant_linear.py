"""``quant_lora_linear``: ``y = x deq(W)^T + b + s (x_d A^T) B^T`` on a quantised frozen base weight.

``W [N, K]`` is stored in the unified quantised layout (``ops/CONTRACTS.md`` section 6): ``codes`` (int8
``[N, K]`` for 8 bits, uint8 ``[N, K // 2]`` for 4 bits, element ``2j`` in the low nibble of byte ``j``,
uint8 ``[N, K // 2 + K // 8]`` for 5 bits: the low 4 bits so, then the 5th bits), float16 ``scales`` and
optional ``offsets`` ``[N, K // G]`` per group of ``G`` consecutive k, and a float32 ``lut [2 ** bits]``
giving the value of each 4-/5-bit code. :class:`QuantLoraLinear` is the Cell a layer holds
(GRAPH- and PYNATIVE-safe). Implementations: the fused CPU kernels (dequantising tile by tile, never the
whole matrix), the composed MindSpore ops (dequantise, then matmul: the reference, and the GPU path), and
on Ascend the hook :func:`ascend_quant_matmul` (``WeightQuantBatchMatmul``, :mod:`mindpet.quant.ascend_matmul`).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from mindspore import Tensor, ops
from mindspore.common import dtype as mstype

from mindpet.kernels import _primitives
from mindpet.kernels import backend as _backend
from mindpet.kernels.composed import quant_lora_linear_composed
from mindpet.kernels.lora_linear import mask_input
from mindpet._mindspore import constexpr
from mindpet.kernels.fused_op import FusedOp, fused_for_dtype

__all__ = ["QuantLoraLinear", "ascend_quant_matmul"]

BITS = (4, 5, 8)


def ascend_quant_matmul(quant_format: Optional[str], group_size: int):
    """The Ascend hook: :func:`mindpet.quant.ascend_matmul.weight_quant_matmul` (``x deq(W)^T`` by
    ``WeightQuantBatchMatmul``, mapped from the unified layout in graph) when the device target is Ascend and the
    format maps onto it, else None (composed: ``nf4``, an unknown format, any other device). Never run on an NPU."""
    if quant_format is None or _backend.device_target() != "Ascend":
        return None
    from mindpet.quant.ascend_matmul import weight_quant_matmul  # pylint: disable=import-outside-toplevel
    return weight_quant_matmul(quant_format, group_size)


def _check_call(k, codes_shape, codes_dtype, scales_shape, scales_dtype, offsets_shape, offsets_dtype, lut_shape,
                lut_dtype, bits, group_size, has_offsets):
    """Shape and dtype checks of one call, on the shapes and dtypes (``k``: in_channels)."""
    if k % group_size != 0:
        raise ValueError(f"For 'quant_lora_linear', in_channels ({k}) must be a multiple of group_size "
                         f"({group_size}).")
    if bits in (4, 5):
        width = k // 2 if bits == 4 else k // 2 + k // 8
        if codes_dtype != mstype.uint8:
            raise TypeError(f"For 'quant_lora_linear', 'codes' must be uint8 for bits={bits}, but got {codes_dtype}.")
        if codes_shape[1] != width or (bits == 5 and k % 8):
            layout = "in_channels // 2" if bits == 4 else "in_channels // 2 + in_channels // 8"
            raise ValueError(f"For 'quant_lora_linear', 'codes' must be [N, {layout}] = [N, {width}] for "
                             f"bits={bits}, but got {codes_shape}.")
    else:
        if codes_dtype != mstype.int8:
            raise TypeError(f"For 'quant_lora_linear', 'codes' must be int8 for bits=8, but got {codes_dtype}.")
        if codes_shape[1] != k:
            raise ValueError(f"For 'quant_lora_linear', 'codes' must be [N, in_channels] = [N, {k}] for bits=8, "
                             f"but got {codes_shape}.")
    if scales_dtype != mstype.float16:
        raise TypeError(f"For 'quant_lora_linear', 'scales' must be float16, but got {scales_dtype}.")
    if scales_shape[0] != codes_shape[0] or scales_shape[1] * group_size != k:
        raise ValueError(f"For 'quant_lora_linear', 'scales' must be [N, in_channels // group_size] = "
                         f"[{codes_shape[0]}, {k // group_size}], but got {scales_shape}.")
    if has_offsets:
        if offsets_dtype != mstype.float16:
            raise TypeError(f"For 'quant_lora_linear', 'offsets' must be float16, but got {offsets_dtype}.")
        if offsets_shape != scales_shape:
            raise ValueError(f"For 'quant_lora_linear', 'offsets' must have the shape of 'scales' {scales_shape}, "
                             f"but got {offsets_shape}.")
    if bits != 8 and (lut_dtype != mstype.float32 or tuple(lut_shape) != (1 << bits,)):
        raise ValueError(f"For 'quant_lora_linear', 'lut' must be a float32 [{1 << bits}] tensor for bits={bits}, "
                         f"but got {lut_dtype} {tuple(lut_shape)}.")


def _plan(x_shape, x_dtype, codes_shape, codes_dtype, scales_shape, scales_dtype, offsets_shape, offsets_dtype,
          lut_shape, lut_dtype, bits, group_size, has_offsets, fused, choice) -> bool:
    """The call's checks (:func:`_check_call`) and whether it runs fused (:func:`fused_for_dtype`).

    Used as a ``constexpr`` (``_call_plan``, ``_fused_plan``): in GRAPH mode evaluated in Python at compile
    time, so the checks add no nodes to the graph (as plain code in ``construct`` their branches cost ~3 MiB
    of MindSpore's compiled-graph memory per layer instance, measured)."""
    _check_call(x_shape[-1], codes_shape, codes_dtype, scales_shape, scales_dtype, offsets_shape, offsets_dtype,
                lut_shape, lut_dtype, bits, group_size, has_offsets)
    return fused_for_dtype(fused, choice, x_dtype, "quant_lora_linear")


_call_plan = constexpr(check=False)(_plan)


@constexpr(check=False)
def _fused_plan(x_shape, x_dtype, codes_shape, codes_dtype, scales_shape, scales_dtype, offsets_shape, offsets_dtype,
                lut_shape, lut_dtype, bits, group_size, has_offsets, fused, choice):
    """The fused call's checks (a TypeError for a dtype the kernel does not take), and its constant shapes:
    ``(rows, out_shape, half)``: x as ``[M, K]``, y as ``[*, N]``, whether x is float16."""
    if not _plan(x_shape, x_dtype, codes_shape, codes_dtype, scales_shape, scales_dtype, offsets_shape, offsets_dtype,
                 lut_shape, lut_dtype, bits, group_size, has_offsets, fused, choice):
        raise TypeError(f"For 'quant_lora_linear', the op was built with a float32/float16 'dtype' for the fused "
                        f"kernel, but got an input of {x_dtype}; build it with dtype=None to run other dtypes "
                        f"composed.")
    k = x_shape[-1]
    return (-1, k), tuple(x_shape[:-1]) + (codes_shape[0],), x_dtype == mstype.float16


@constexpr(check=False)
def _check_lora_dtypes(x_dtype, a_dtype, b_dtype) -> bool:
    if a_dtype != x_dtype or b_dtype != x_dtype:
        raise TypeError("For 'quant_lora_linear', x, lora_a, lora_b (and bias, mask) must share one dtype.")
    return True


class QuantLoraLinear(FusedOp):
    r"""``y = x deq(W)^T + b + s (x_d A^T) B^T``, ``x_d = x * mask``, on a quantised frozen ``W``.

    Args:
        bits: 4 (uint8 codes, two per byte, looked up in ``lut``), 5 (4 bits packed so, then the 5th bits;
            looked up in ``lut [32]``) or 8 (int8 codes).
        group_size: ``G``, the k-run sharing one scale (and offset); ``in_channels % G == 0``.
        has_offsets: whether ``offsets`` are added (else a 1-element float16 stand-in is passed).
        has_bias: whether ``bias`` is added (``construct`` then takes a bias tensor, else None).
        has_lora: whether the LoRA term is added (``lora_a``/``lora_b`` tensors, else None).
        scale: ``s = lora_alpha / lora_rank``.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (see :mod:`mindpet.kernels.backend`); the fused
            kernels run on CPU only (``auto`` is composed elsewhere, or the Ascend hook).
        dtype: the dtype of the calls when known at construction (bfloat16: composed). float32/float16 with the
            fused backend: the graph holds only the kernel call (the dtype is then required of every call).
        quant_format: the weight's format name (``'q4_0'``, ...), which picks the Ascend mapping
            (:func:`ascend_quant_matmul`); None runs composed on Ascend.

    Inputs: ``x [*, K]`` (float32/float16), ``codes``, ``scales [N, K // G]`` float16, ``offsets [N, K // G]``
    float16 (1-element when absent), ``lut [2 ** bits]`` float32 (1-element for bits 8), ``bias [N]`` or None,
    ``lora_a [R, K]``, ``lora_b [N, R]`` or None, ``mask`` like x or None; bias, LoRA and mask share x's dtype;
    ``dropout_key`` (fused CPU kernel, instead of ``mask``): the int64 ``[3]`` key of ``dropout_mask``'s mask
    (:class:`~mindpet.kernels.DropoutKey`), generated in the kernel (no mask tensor; as :class:`LoraLinear`).
    Output ``y [*, N]``. Gradients: ``x``, ``lora_a``, ``lora_b``; zeros for the quantised tensors and the
    bias (never trainable).
    """

    op_name = "quant_lora_linear"

    def __init__(self, bits: int, group_size: int, has_offsets: bool, has_bias: bool, has_lora: bool,
                 scale: float = 1.0, backend: Optional[str] = None, dtype: Any = None,
                 quant_format: Optional[str] = None):
        super().__init__()
        if isinstance(bits, bool) or bits not in BITS:
            raise ValueError(f"For 'QuantLoraLinear', 'bits' must be 4, 5 or 8, but got {bits!r}.")
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise ValueError(f"For 'QuantLoraLinear', 'group_size' must be a positive int, but got {group_size!r}.")
        self.bits = int(bits)
        self.group_size = int(group_size)
        self.has_offsets = bool(has_offsets)
        self.has_bias = bool(has_bias)
        self.has_lora = bool(has_lora)
        self.scale = float(scale)
        self.select_backend(backend, cpu_only=True, dtype=dtype)
        if self.fused:
            self.fwd = _primitives.quant_lora_linear_forward(self.impl)
        self.ascend_matmul = None if self.fused or self.choice == "composed" else ascend_quant_matmul(
            quant_format, self.group_size)
        self.on_ascend = self.ascend_matmul is not None
        if self.on_ascend:
            self.impl = "ascend"
        # fused whatever the call: the construction dtype is float32/float16 (a layer casts its input to it)
        self.dtype_fused = bool(self.fused and dtype in (mstype.float32, mstype.float16))
        self.matmul_nt = ops.MatMul(transpose_b=True)
        # 1-element stand-ins for an absent bias / LoRA / mask (constants, one per dtype)
        self._absent32 = Tensor(np.zeros(1, np.float32))
        self._absent16 = Tensor(np.zeros(1, np.float16))

    def construct(self, x, codes, scales, offsets, lut, bias, lora_a, lora_b, mask=None, dropout_key=None):
        if self.dtype_fused:  # decided at construction: the graph holds the kernel call only
            return self._fused(x, codes, scales, offsets, lut, bias, lora_a, lora_b, mask, dropout_key)
        x_shape = x.shape
        fused = _call_plan(x_shape, x.dtype, codes.shape, codes.dtype, scales.shape, scales.dtype, offsets.shape,
                           offsets.dtype, lut.shape, lut.dtype, self.bits, self.group_size, self.has_offsets, self.fused,
                           self.choice)
        if fused:
            return self._fused(x, codes, scales, offsets, lut, bias, lora_a, lora_b, mask, dropout_key)
        if dropout_key is not None:
            raise ValueError(f"For 'quant_lora_linear', 'dropout_key' needs the fused CPU kernel, but this call runs "
                             f"{self.impl if self.fused else 'composed'} for {x.dtype}; pass 'mask' instead.")
        x2d = x.reshape((-1, x_shape[-1]))
        if mask is not None:
            mask = mask.reshape((-1, x_shape[-1]))
        bias = bias if self.has_bias else None
        if self.on_ascend:
            y = self._ascend(x2d, codes, scales, offsets, bias, lora_a, lora_b, mask)
        else:
            y = quant_lora_linear_composed(x2d, codes, scales, offsets if self.has_offsets else None, lut, bias,
                                           lora_a if self.has_lora else None, lora_b, self.scale, self.bits,
                                           self.group_size, mask)
        return y.reshape(x_shape[:-1] + (codes.shape[0],))

    def _fused(self, x, codes, scales, offsets, lut, bias, lora_a, lora_b, mask, dropout_key):
        """The fused kernel call (checks at compile time; absent operands replaced by 1-element stand-ins)."""
        x_shape = x.shape
        rows, out_shape, half = _fused_plan(x_shape, x.dtype, codes.shape, codes.dtype, scales.shape, scales.dtype,
                                            offsets.shape, offsets.dtype, lut.shape, lut.dtype, self.bits,
                                            self.group_size, self.has_offsets, self.fused, self.choice)
        x2d = x.reshape(rows)
        dummy = self._absent16 if half else self._absent32
        if self.has_lora:
            _check_lora_dtypes(x.dtype, lora_a.dtype, lora_b.dtype)
            a_in, b_in = lora_a, lora_b
        else:
            a_in, b_in = dummy, dummy
        bias_in = bias if self.has_bias else dummy
        mask_in, has_mask = mask_input(None if mask is None else mask.reshape(rows), dropout_key, dummy, self.impl,
                                       "quant_lora_linear")
        y, _ = self.fwd(x2d, codes, scales, offsets, lut, bias_in, a_in, b_in, mask_in, self.scale, self.group_size,
                        self.bits, 1 if self.has_offsets else 0, 1 if self.has_bias else 0, 1 if self.has_lora else 0,
                        has_mask)
        return y.reshape(out_shape)

    def _ascend(self, x2d, codes, scales, offsets, bias, lora_a, lora_b, mask):
        """Ascend: ``x deq(W)^T`` by the platform's weight-quant matmul, bias and LoRA composed."""
        y = self.ascend_matmul(x2d, codes, scales, offsets)
        if bias is not None:
            y = y + ops.stop_gradient(bias)  # frozen with the base
        if self.has_lora:
            x_d = x2d if mask is None else x2d * mask
            y = y + self.matmul_nt(self.matmul_nt(x_d, lora_a), lora_b) * self.scale
        return y

    def extend_repr(self) -> str:
        return (f"bits={self.bits}, group_size={self.group_size}, has_offsets={self.has_offsets}, "
                f"has_bias={self.has_bias}, has_lora={self.has_lora}, scale={self.scale}, impl={self.impl}")
