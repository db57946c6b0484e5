"""Quantised frozen linear weights on the host (numpy): one layout for every format.

A weight ``W [N, K]`` (``nn.Dense`` layout: N = out_channels, K = in_channels) is stored as

- ``codes``: ``int8 [N, K]`` (8-bit) or ``uint8 [N, K // 2]`` (4-bit; element ``2j`` in the low nibble
  and ``2j + 1`` in the high nibble of byte ``j``),
- ``scales``: ``float16 [N, K // G]``, one per group of ``G`` consecutive k,
- ``offsets``: ``float16 [N, K // G]`` or ``None``,
- ``lut``: ``float32 [16]`` (4-bit formats: the value of each code),

and dequantised in float32 (or wider) as
``W[n, k] = v(n, k) * scales[n, k // G] + offsets[n, k // G]`` with ``v = codes[n, k]`` (8-bit) or
``v = lut[nibble(n, k)]`` (4-bit).

Formats (``FORMATS``):

- ``"int8"``: per-output-channel absmax (``G = K``), ``scale = float16(absmax / 127)``,
  ``c = round(w / scale)`` (half away from zero) clipped to [-127, 127]; an all-zero row has scale 0.
- ``"nf4"``: QLoRA NormalFloat4 (Dettmers et al. 2023, Appendix E), blocks of 64 along k,
  ``scale = float16(absmax of the block)``, ``c = argmin |lut - w / scale|``. The absmax is NOT
  double-quantised (QLoRA's second-level quantisation of the scales is not implemented): 4.25 bits/weight.
- ``"q4_0"``, ``"q4_1"``, ``"q8_0"``: GGUF/ggml blocks of 32 with the ggml reference rounding
  (``q4_0``: ``d = (the value of largest magnitude) / -8``, ``c = min(15, trunc(w / d + 8.5))``,
  ``lut[c] = c - 8``; ``q4_1``: ``d = (max - min) / 15``, ``m = min``, ``c = min(15, trunc((w - m) / d + 0.5))``,
  ``lut[c] = c``; ``q8_0``: ``d = absmax / 127``, ``c = round(w / d)``). As in ggml the codes are computed
  against the float32 ``d`` and ``d``/``m`` are then stored as float16. For int8/nf4 the scale is rounded
  to float16 first and the codes are computed against the rounded scale.

K must be a multiple of the group size (32 for GGUF formats, 64 for nf4): otherwise a ValueError naming
``in_channels`` and the group size. This is a decision, not an oversight: padding would change the
weight's shape that every consumer (kernels, checkpoints) relies on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

FORMATS: Tuple[str, ...] = ("int8", "nf4", "q4_0", "q4_1", "q8_0")

# The 16 NormalFloat4 values (QLoRA, Dettmers et al. 2023, Appendix E).
NF4_VALUES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
NF4_VALUES.flags.writeable = False
_Q4_0_LUT = np.arange(-8, 8, dtype=np.float32)
_Q4_1_LUT = np.arange(16, dtype=np.float32)
_NF4_MIDPOINTS = ((NF4_VALUES[:-1].astype(np.float64) + NF4_VALUES[1:]) / 2).astype(np.float32)
for _table in (_Q4_0_LUT, _Q4_1_LUT):
    _table.flags.writeable = False
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class FormatSpec:
    """Static description of a format: ``bits``, ``group_size`` (``None`` = per output channel, G = K),
    ``lut`` (float32 [16] for 4-bit formats, else ``None``) and ``has_offsets``."""

    name: str
    bits: int
    group_size: Optional[int]
    lut: Optional[np.ndarray]
    has_offsets: bool

    def group_size_for(self, in_channels: int) -> int:
        """G for a weight with ``in_channels`` columns (K itself for a per-channel format)."""
        return int(in_channels) if self.group_size is None else self.group_size


_SPECS = {
    "int8": FormatSpec("int8", 8, None, None, False),
    "nf4": FormatSpec("nf4", 4, 64, NF4_VALUES, False),
    "q4_0": FormatSpec("q4_0", 4, 32, _Q4_0_LUT, False),
    "q4_1": FormatSpec("q4_1", 4, 32, _Q4_1_LUT, True),
    "q8_0": FormatSpec("q8_0", 8, 32, None, False),
}


def format_spec(name: str) -> FormatSpec:
    """The :class:`FormatSpec` of ``name`` (one of :data:`FORMATS`); ValueError naming ``format`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"'format' must be a str, one of {list(FORMATS)}, but got {type(name).__name__}.")
    if name not in _SPECS:
        raise ValueError(f"'format' must be one of {list(FORMATS)}, but got {name!r}.")
    return _SPECS[name]


def _check_group(format: str, in_channels: int) -> int:
    spec = format_spec(format)
    group = spec.group_size_for(in_channels)
    if in_channels < 1 or in_channels % group or (spec.bits == 4 and in_channels % 2):
        raise ValueError(f"in_channels ({in_channels}) must be a positive multiple of the group size {group} "
                         f"of format {format!r}; weights are not padded.")
    return group


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A quantised weight ``[N, K]`` (see the module doc for the layout); validated on construction.

    Attributes:
        format: one of :data:`FORMATS`.
        shape: ``(N, K)`` of the dequantised weight.
        codes: ``int8 [N, K]`` (8-bit) or ``uint8 [N, K // 2]`` (4-bit, low nibble = even k).
        scales: ``float16 [N, K // G]``.
        offsets: ``float16 [N, K // G]`` (``q4_1``) or ``None``.
    """

    format: str
    shape: Tuple[int, int]
    codes: np.ndarray
    scales: np.ndarray
    offsets: Optional[np.ndarray] = None

    def __post_init__(self):
        spec = format_spec(self.format)
        try:
            shape = tuple(int(d) for d in self.shape)
        except (TypeError, ValueError) as err:
            raise TypeError(f"'shape' must be a pair of ints (N, K), but got {self.shape!r}.") from err
        if len(shape) != 2 or shape[0] < 1:
            raise ValueError(f"'shape' must be (N, K) with N >= 1, but got {self.shape!r}.")
        object.__setattr__(self, "shape", shape)
        n, k = shape
        group = _check_group(self.format, k)
        code_dtype, code_shape = (np.int8, (n, k)) if spec.bits == 8 else (np.uint8, (n, k // 2))
        _check_array("codes", self.codes, code_dtype, code_shape, self.format)
        _check_array("scales", self.scales, np.float16, (n, k // group), self.format)
        if spec.has_offsets:
            _check_array("offsets", self.offsets, np.float16, (n, k // group), self.format)
        elif self.offsets is not None:
            raise ValueError(f"'offsets' must be None for format {self.format!r}, which has no offsets.")

    @property
    def bits(self) -> int:
        return format_spec(self.format).bits

    @property
    def group_size(self) -> int:
        return format_spec(self.format).group_size_for(self.shape[1])

    @property
    def lut(self) -> Optional[np.ndarray]:
        """float32 [16] value of each 4-bit code (``None`` for 8-bit formats)."""
        return format_spec(self.format).lut

    @property
    def nbytes(self) -> int:
        """Bytes of codes + scales + offsets (the lut is a per-format constant)."""
        return int(self.codes.nbytes + self.scales.nbytes + (0 if self.offsets is None else self.offsets.nbytes))

    def take_rows(self, rows) -> "QuantizedTensor":
        """The weight ``W[rows]`` (a permutation or selection of output channels) without dequantising:
        the rows of codes, scales and offsets are taken. E.g. undoing llama.cpp's Q/K row permutation."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(f"'rows' must be a 1-D integer array, but got {rows.dtype} with shape {rows.shape}.")
        if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
            raise ValueError(f"'rows' must index the {self.shape[0]} rows of the weight, but got values in "
                             f"[{rows.min()}, {rows.max()}].")
        offsets = None if self.offsets is None else np.ascontiguousarray(self.offsets[rows])
        return QuantizedTensor(self.format, (rows.size, self.shape[1]), np.ascontiguousarray(self.codes[rows]),
                               np.ascontiguousarray(self.scales[rows]), offsets)


def _check_array(name: str, value, dtype, shape, format: str) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"'{name}' of a {format!r} QuantizedTensor must be a numpy array, but got "
                        f"{type(value).__name__}.")
    if value.dtype != dtype or value.shape != shape:
        raise ValueError(f"'{name}' of a {format!r} QuantizedTensor must be {np.dtype(dtype).name} {list(shape)}, "
                         f"but got {value.dtype.name} {list(value.shape)}.")


def _check_weight(weight) -> np.ndarray:
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"'weight' must be a numpy array, but got {type(weight).__name__}.")
    if not np.issubdtype(weight.dtype, np.floating):
        raise TypeError(f"'weight' must have a floating dtype, but got {weight.dtype}.")
    if weight.ndim != 2:
        raise ValueError(f"'weight' must be 2-D [out_channels, in_channels], but got shape {list(weight.shape)}.")
    if weight.shape[0] < 1:
        raise ValueError(f"'weight' must have at least one row, but got shape {list(weight.shape)}.")
    if not np.isfinite(weight).all():
        raise ValueError("'weight' must be finite, but it contains NaN or Inf.")
    return weight


def _inverse(d: np.ndarray) -> np.ndarray:
    """1 / d, with 0 where d == 0 (ggml's ``id = d ? 1/d : 0``)."""
    out = np.zeros_like(d)
    np.divide(1, d, out=out, where=d != 0)
    return out


def _to_float16(values: np.ndarray, what: str) -> np.ndarray:
    if np.abs(values).max(initial=0) > _FLOAT16_MAX:
        raise ValueError(f"'weight' is too large for float16 {what} (|{what}| up to "
                         f"{np.abs(values).max():.4g} > {_FLOAT16_MAX}).")
    return values.astype(np.float16)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C ``roundf``: halves away from zero (what ggml's q8_0 reference uses)."""
    return np.copysign(np.floor(np.abs(x) + np.float32(0.5)), x)


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 [N, K] codes 0..15 -> uint8 [N, K // 2], element 2j low nibble, 2j + 1 high nibble."""
    return codes[:, 0::2] | (codes[:, 1::2] << np.uint8(4))


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """Inverse of the packing: uint8 [N, K // 2] -> uint8 [N, K] codes 0..15."""
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = packed & np.uint8(0x0F)
    out[:, 1::2] = packed >> np.uint8(4)
    return out


def quantize(weight: np.ndarray, format: str) -> QuantizedTensor:
    """Quantise a float weight ``[N, K]`` (computation in float32) to ``format``; see the module doc.

    Raises:
        TypeError: ``weight`` is not a floating numpy array, or ``format`` not a str.
        ValueError: ``weight`` not 2-D or not finite, unknown ``format``, K not a multiple of the group size
            (named ``in_channels``), or scales beyond float16's range.
    """
    spec = format_spec(format)
    w = _check_weight(weight)
    n, k = w.shape
    group = _check_group(format, k)
    blocks = w.astype(np.float32, copy=False).reshape(n, k // group, group)
    offsets = None
    if format in ("int8", "nf4"):
        absmax = np.abs(blocks).max(axis=2)
        scales = _to_float16(absmax / np.float32(127) if format == "int8" else absmax, "scales")
        scale = scales.astype(np.float32)[..., None]
        x = np.divide(blocks, scale, out=np.zeros_like(blocks), where=scale != 0)
        if format == "int8":
            codes = np.clip(_round_half_away(x), -127, 127).astype(np.int8)
        else:
            codes = np.searchsorted(_NF4_MIDPOINTS, x, side="left").astype(np.uint8)
    elif format == "q8_0":
        d = np.abs(blocks).max(axis=2) / np.float32(127)
        codes = _round_half_away(blocks * _inverse(d)[..., None]).astype(np.int8)
        scales = _to_float16(d, "scales")
    elif format == "q4_0":
        index = np.abs(blocks).argmax(axis=2)[..., None]
        d = np.take_along_axis(blocks, index, axis=2)[..., 0] / np.float32(-8) + np.float32(0)  # -0 -> +0
        codes = np.minimum(np.trunc(blocks * _inverse(d)[..., None] + np.float32(8.5)), 15).astype(np.uint8)
        scales = _to_float16(d, "scales")
    else:  # q4_1
        low, high = blocks.min(axis=2), blocks.max(axis=2)
        d = (high - low) / np.float32(15)
        codes = np.minimum(np.trunc((blocks - low[..., None]) * _inverse(d)[..., None] + np.float32(0.5)),
                           15).astype(np.uint8)
        scales = _to_float16(d, "scales")
        offsets = _to_float16(low, "offsets")
    codes = codes.reshape(n, k)
    if spec.bits == 4:
        codes = _pack_nibbles(codes)
    return QuantizedTensor(format, (n, k), np.ascontiguousarray(codes), np.ascontiguousarray(scales), offsets)


def dequantize(q: QuantizedTensor, dtype=np.float32) -> np.ndarray:
    """The weight ``[N, K]`` in ``dtype`` (float32 or float64; float16 computes in float32 and casts):
    ``v(n, k) * scales[n, k // G] (+ offsets[n, k // G])``, v the code (8-bit) or ``lut[code]`` (4-bit)."""
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"'q' must be a QuantizedTensor, but got {type(q).__name__}.")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"'dtype' must be a floating dtype, but got {dtype}.")
    compute = np.float64 if dtype == np.float64 else np.float32
    n, k = q.shape
    group = q.group_size
    values = q.codes.astype(compute) if q.bits == 8 else q.lut.astype(compute)[unpack_nibbles(q.codes)]
    values = values.reshape(n, k // group, group)
    values *= q.scales.astype(compute)[..., None]
    if q.offsets is not None:
        values += q.offsets.astype(compute)[..., None]
    return values.reshape(n, k).astype(dtype, copy=False)


def requantize(q: QuantizedTensor, format: str) -> QuantizedTensor:
    """``q`` re-encoded to ``format`` through one float32 copy of this tensor only (``quantize(dequantize(q))``).

    The result carries both errors: e.g. ``q4_1 -> q8_0`` keeps q4_1's error (the 4-bit grid) and adds
    q8_0's rounding; it saves no accuracy, only changes the storage/kernel format. ``q`` itself when
    ``format == q.format``."""
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"'q' must be a QuantizedTensor, but got {type(q).__name__}.")
    format_spec(format)
    return q if format == q.format else quantize(dequantize(q), format)
