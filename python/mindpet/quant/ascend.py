"""The Ascend path for a quantised base: MindSpore's ``WeightQuantBatchMatmul`` (CANN ``aclnnWeightQuantBatchMatmulV2``).

NOT RUN ON AN NPU. Everything here was written from the documentation and tested on CPU only (the mapping
against a numpy emulation of the documented formula); no Ascend device was available.

Facts used (MindSpore 2.10 and the CANN operator documentation):

- MindSpore 2.10 exposes the primitive as ``mindspore.ops.auto_generate.WeightQuantBatchMatmul(transpose_x=False,
  transpose_weight=False, antiquant_group_size=0)``, called as ``prim(x, weight, antiquant_scale,
  antiquant_offset=None, quant_scale=None, quant_offset=None, bias=None)`` (``gen_ops_prim.py``; it is not in
  ``mindspore.ops`` in 2.10). Its Ascend kernel launches ``aclnnWeightQuantBatchMatmulV2``.
- CANN: ``y = x @ ANTIQUANT(weight) + bias``, ``ANTIQUANT(weight) = (weight + antiquantOffset) * antiquantScale``;
  ``x`` float16/bfloat16 ``(m, k)``; ``weight`` int8 or int4 ``(k, n)`` (a transposed view allowed);
  ``antiquantScale`` float16/bfloat16 with the dtype of ``x``: per-channel ``(n,)`` or ``(1, n)``, per-group
  ``(ceil(k / group_size), n)``; ``antiquantOffset`` the same shape and dtype as the scale; per-group
  ``antiquantGroupSize`` must be a multiple of 32 in ``[32, k - 1]``, 0 otherwise; ``k, n`` in ``[1, 65535]``;
  ``bias`` ``(n,)``, float16 for float16 ``x``; Atlas A2/A3 (int4 and per-group), Atlas inference series
  (int8 per-channel). Per-channel is recommended with a transposed weight, per-group with a non-transposed one.
- MindSpore's pyboost for this primitive (``WeightQuantBatchMatmulV2AscendCustomize``): an int4 weight
  (``mindspore.qint4x2``) is a tensor whose last dimension holds two int4 values per byte (the kernel doubles
  the last dimension), and ``transpose_weight=True`` transposes only the weight, so the scale/offset keep the
  ``(groups, n)`` layout whatever ``transpose_weight`` is.
- Assumed, unverified: int4 values are two's complement, the element with the even index of the packed
  (last) dimension in the low nibble of a byte (little-endian nibble order).

Mapping (``W[n, k] = (code' + offset') * scale'``, codes' signed):

- ``int8``: int8 codes, per-channel scale, no offset, group size 0.
- ``q8_0``: int8 codes, per-group scale ``d``, group 32.
- ``q4_0``: int4 codes ``c - 8``, scale ``d``, no offset, group 32.
- ``q4_1``: ``d c + m = ((c - 8) + (8 + m / d)) d``: int4 codes ``c - 8``, offset ``8 + m / d`` rounded to float16
  (the one inexact step: ``|dW| <= |8 + m / d| 2^-11 d``, about 2^-11 of the weight's magnitude), scale ``d``.
  A group with ``d == 0`` (all weights equal ``m``) is re-encoded exactly as codes 0, offset 1, scale ``m``.
  ``|8 + m / d|`` beyond float16's range is a ValueError.
- ``q5_0``: int8 codes ``c - 16`` (5-bit values do not fit int4), scale ``d``, no offset, group 32.
- ``q5_1``: ``d c + m = ((c - 16) + (16 + m / d)) d``: int8 codes ``c - 16``, offset ``16 + m / d`` rounded to
  float16 (as q4_1), scale ``d``; a ``d == 0`` group as codes 0, offset 1, scale ``m``.
- ``nf4``: refused (a lookup table is not affine); re-encode with ``requantize(q, "q4_0")`` (adds q4_0's error
  to NF4's) or quantise the float weight as ``"q4_0"``/``"int8"``.

A weight with one group per row (K == group size) is mapped per-channel (the group size must be < k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mindpet._eager import GradSafeCell
from mindpet.quant.formats import QuantizedTensor, unpack_codes, unpack_nibbles

MAPPABLE_FORMATS = ("int8", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")  # affine: (w + offset) * scale
# The value subtracted from a 4-/5-bit code to make it signed (the operator's int4/int8 weight): 2 ** (bits - 1).
CODE_CENTER = {4: 8, 5: 16}
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_MAX_DIM = 65535  # CANN: k and n in [1, 65535]


@dataclass(frozen=True, eq=False)
class WQBMMArgs:
    """Host arrays for ``WeightQuantBatchMatmul(transpose_x=False, transpose_weight, antiquant_group_size)``.

    ``weight``: int8 ``[N, K]`` (transpose_weight) / ``[K, N]`` (``bits == 8``: 8-bit formats and the 5-bit ones);
    int4 (``bits == 4``) packed two per byte along the last dimension, ``[N, K // 2]`` / ``[K, N // 2]`` (pass as
    ``mindspore.qint4x2``). ``antiquant_scale`` and ``antiquant_offset`` (or None): float16 ``(N,)`` per-channel,
    ``(K // G, N)`` per-group.
    """

    weight: np.ndarray
    antiquant_scale: np.ndarray
    antiquant_offset: Optional[np.ndarray]
    group_size: int
    transpose_weight: bool
    bits: int
    shape: tuple

    def __iter__(self):  # (weight, antiquant_scale, antiquant_offset, group_size, transpose_weight)
        return iter((self.weight, self.antiquant_scale, self.antiquant_offset, self.group_size, self.transpose_weight))


def _pack_int4(values: np.ndarray) -> np.ndarray:
    """Signed int4 values [R, C] (C even) -> int8 [R, C // 2], even column in the low nibble."""
    nibbles = (values.astype(np.int16) & 0xF).astype(np.uint8)
    return (nibbles[:, 0::2] | (nibbles[:, 1::2] << np.uint8(4))).view(np.int8)


def _unpack_int4(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_pack_int4`: int8 [R, C // 2] -> signed int16 [R, C]."""
    nibbles = unpack_nibbles(packed.view(np.uint8)).astype(np.int16)
    return np.where(nibbles >= 8, nibbles - 16, nibbles)


def offset_affine(d, m, where, center: int):
    """q4_1's / q5_1's ``d c + m`` as the operator's ``((c - center) + offset) * scale``: ``scale = d``,
    ``offset = center + m / d``; a group with ``d == 0`` (every weight is ``m``) as ``scale = m``, ``offset = 1``
    with its codes zeroed. ``center``: :data:`CODE_CENTER` of the format's bits (8 or 16).

    ``d``, ``m``: float arrays ``[N, K / G]`` (numpy with ``where=np.where``, or MindSpore tensors with
    ``ops.where``). Returns ``(scale, offset, keep)``, ``keep = d != 0`` (the groups whose codes stay)."""
    keep = d != 0
    offset = where(keep, float(center) + m / where(keep, d, 1.0), 1.0)
    return where(keep, d, m), offset, keep


def to_weight_quant_matmul(q: QuantizedTensor, transpose_weight: Optional[bool] = None) -> WQBMMArgs:
    """Map ``q`` onto ``WeightQuantBatchMatmul``'s inputs (module doc); unpacks as
    ``(weight, antiquant_scale, antiquant_offset, group_size, transpose_weight)``.

    ``transpose_weight`` None picks the documented recommendation: True per-channel, False per-group (or True if
    N is odd for an int4 per-group weight, which cannot be packed along N).

    Raises:
        TypeError: ``q`` is not a QuantizedTensor.
        ValueError: ``q.format`` is ``nf4`` (not affine), N or K above 65535, or a q4_1 offset ``8 + m / d``
            overflows float16.
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"'q' must be a QuantizedTensor, but got {type(q).__name__}.")
    if q.format not in MAPPABLE_FORMATS:
        raise ValueError(f"format {q.format!r} cannot run on WeightQuantBatchMatmul: its codes index a lookup table, "
                         f"which (w + offset) * scale cannot express. Quantise the weight as 'q4_0' or 'int8' "
                         f"instead (or requantize(q, 'q4_0'), which adds q4_0's error to nf4's).")
    n, k = q.shape
    if max(n, k) > _MAX_DIM:
        raise ValueError(f"WeightQuantBatchMatmul takes k and n in [1, {_MAX_DIM}], but the weight is {n} x {k}.")
    if q.bits == 8:
        codes = q.codes.astype(np.int16)
    else:
        codes = unpack_codes(q.codes, q.bits).astype(np.int16) - CODE_CENTER[q.bits]
    scale = q.scales.copy()
    offset = None
    if q.offsets is not None:  # q4_1, q5_1
        center = CODE_CENTER[q.bits]
        scale, ratio, keep = offset_affine(q.scales.astype(np.float64), q.offsets.astype(np.float64), np.where, center)
        if np.abs(ratio).max(initial=0) > _FLOAT16_MAX:
            raise ValueError(f"a {q.format} group has |{center} + m / d| = {np.abs(ratio).max():.4g}, beyond float16: "
                             f"it cannot be mapped to antiquant_offset; re-encode it with requantize(q, 'q8_0').")
        offset, scale = ratio.astype(np.float16), scale.astype(np.float16)
        codes = (codes.reshape(n, k // q.group_size, q.group_size) * keep[:, :, None]).reshape(n, k)
    group = q.group_size
    per_channel = group == k
    int4 = q.bits == 4  # else the int8 weight (8-bit codes, and 5-bit ones as c - 16)
    if transpose_weight is None:
        transpose_weight = per_channel or (int4 and n % 2 == 1)
    if int4 and not transpose_weight and n % 2:
        raise ValueError(f"an int4 weight with transpose_weight=False is packed along out_channels, which must be "
                         f"even, but got {n}.")
    weight = codes if transpose_weight else codes.T
    weight = _pack_int4(np.ascontiguousarray(weight)) if int4 else weight.astype(np.int8)
    scale = scale[:, 0] if per_channel else scale.T
    if offset is not None:
        offset = offset[:, 0] if per_channel else offset.T
    return WQBMMArgs(np.ascontiguousarray(weight), np.ascontiguousarray(scale),
                     None if offset is None else np.ascontiguousarray(offset),
                     0 if per_channel else group, bool(transpose_weight), 4 if int4 else 8, (n, k))


def emulate_weight_quant_matmul(x: np.ndarray, args: WQBMMArgs, bias: Optional[np.ndarray] = None) -> np.ndarray:
    """numpy float64 emulation of the documented operator: ``y = x @ ((w + offset) * scale) + bias`` with ``w``
    the ``(k, n)`` weight read from ``args`` (int4 unpacked, transposed back when ``transpose_weight``), the
    scale/offset broadcast per channel or repeated over each group of ``group_size`` rows of k."""
    n, k = args.shape
    w = args.weight.astype(np.int16) if args.bits == 8 else _unpack_int4(args.weight)
    w = (w.T if args.transpose_weight else w).astype(np.float64)  # (k, n)
    scale = args.antiquant_scale.astype(np.float64)
    offset = np.zeros_like(scale) if args.antiquant_offset is None else args.antiquant_offset.astype(np.float64)
    if args.group_size:
        scale = np.repeat(scale, args.group_size, axis=0)
        offset = np.repeat(offset, args.group_size, axis=0)
    y = np.asarray(x, dtype=np.float64) @ ((w + offset) * scale)
    return y if bias is None else y + np.asarray(bias, dtype=np.float64)


class WeightQuantLinear(GradSafeCell):
    """A frozen quantised ``nn.Dense`` for Ascend: ``y = x deq(W)^T + b`` through ``WeightQuantBatchMatmul``.

    NEVER RUN ON AN NPU: it constructs and maps on any device (tested on CPU), but the primitive has no CPU or
    GPU kernel, so ``construct`` only runs on Ascend (Atlas A2/A3 for int4 and per-group formats). ``x`` is
    cast to float16 (the operator takes float16/bfloat16 with scales of the same dtype), flattened to
    ``(m, K)``, and the result cast back to ``x``'s dtype and shape ``[*, N]``. Parameters (never trainable):
    ``weight`` (``mindspore.qint4x2`` or int8), ``antiquant_scale``, ``antiquant_offset`` (q4_1 only),
    ``bias`` (float16, optional); 5-bit formats as int8. ``nf4`` is refused (see :func:`to_weight_quant_matmul`).
    """

    def __init__(self, q: QuantizedTensor, bias: Optional[np.ndarray] = None,
                 transpose_weight: Optional[bool] = None):
        super().__init__()
        import mindspore as ms
        from mindspore.ops.auto_generate import WeightQuantBatchMatmul
        args = to_weight_quant_matmul(q, transpose_weight)
        self.out_channels, self.in_channels = q.shape
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (self.out_channels,):
                raise ValueError(f"'bias' must have shape ({self.out_channels},), but got {bias.shape}.")
        self.args = args
        self.weight = ms.Parameter(ms.Tensor(args.weight, dtype=ms.qint4x2 if args.bits == 4 else ms.int8),
                                   name="weight", requires_grad=False)
        self.antiquant_scale = ms.Parameter(ms.Tensor(args.antiquant_scale), name="antiquant_scale",
                                            requires_grad=False)
        self.antiquant_offset = None if args.antiquant_offset is None else ms.Parameter(
            ms.Tensor(args.antiquant_offset), name="antiquant_offset", requires_grad=False)
        self.bias = None if bias is None else ms.Parameter(ms.Tensor(bias.astype(np.float16)), name="bias",
                                                           requires_grad=False)
        self.matmul = WeightQuantBatchMatmul(False, args.transpose_weight, args.group_size)
        self.compute_dtype = ms.float16

    def construct(self, x):
        out_dtype = x.dtype
        lead = x.shape[:-1]
        x2d = x.reshape((-1, self.in_channels)).astype(self.compute_dtype)
        y = self.matmul(x2d, self.weight, self.antiquant_scale, self.antiquant_offset, None, None, self.bias)
        return y.reshape(lead + (self.out_channels,)).astype(out_dtype)
