"""Quantised frozen linear weights on the host (numpy): one layout for every format.

A weight ``W [N, K]`` (``nn.Dense`` layout: N = out_channels, K = in_channels) is stored as

- ``codes``: ``int8 [N, K]`` (8-bit), ``uint8 [N, K // 2]`` (4-bit; element ``2j`` in the low nibble
  and ``2j + 1`` in the high nibble of byte ``j``) or ``uint8 [N, K // 2 + K // 8]`` (5-bit: each row is the
  low 4 bits of its codes packed as the 4-bit layout, bytes ``[0, K // 2)``, followed by their 5th bits,
  bit ``k % 8`` of byte ``K // 2 + k // 8``; one array, so whatever moves rows handles it unchanged),
- ``scales``: ``float16 [N, K // G]``, one per group of ``G`` consecutive k,
- ``offsets``: ``float16 [N, K // G]`` or ``None``,
- ``lut``: ``float32 [16]`` (4-bit) or ``[32]`` (5-bit formats): the value of each code,

and dequantised in float32 (or wider) as
``W[n, k] = v(n, k) * scales[n, k // G] + offsets[n, k // G]`` with ``v = codes[n, k]`` (8-bit) or
``v = lut[code(n, k)]`` (4-/5-bit).

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
- ``"q5_0"``, ``"q5_1"``: GGUF/ggml 5-bit blocks of 32, ggml reference rounding as the 4-bit ones with 32
  levels (``q5_0``: ``d = (the value of largest magnitude) / -16``, ``c = min(31, trunc(w / d + 16.5))``,
  ``lut[c] = c - 16``; ``q5_1``: ``d = (max - min) / 31``, ``m = min``, ``c = min(31, trunc((w - m) / d + 0.5))``,
  ``lut[c] = c``): 5.5 and 6 bits per weight.

K must be a multiple of the group size (32 for GGUF formats, 64 for nf4): otherwise a ValueError naming
``in_channels`` and the group size. This is a decision, not an oversight: padding would change the
weight's shape that every consumer (kernels, checkpoints) relies on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

FORMATS: Tuple[str, ...] = ("int8", "nf4", "q4_0", "q4_1", "q8_0", "q5_0", "q5_1")

# The 16 NormalFloat4 values (QLoRA, Dettmers et al. 2023, Appendix E).
NF4_VALUES = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
NF4_VALUES.flags.writeable = False
_Q4_0_LUT = np.arange(-8, 8, dtype=np.float32)
_Q4_1_LUT = np.arange(16, dtype=np.float32)
_Q5_0_LUT = np.arange(-16, 16, dtype=np.float32)
_Q5_1_LUT = np.arange(32, dtype=np.float32)
_NF4_MIDPOINTS = ((NF4_VALUES[:-1].astype(np.float64) + NF4_VALUES[1:]) / 2).astype(np.float32)
for _table in (_Q4_0_LUT, _Q4_1_LUT, _Q5_0_LUT, _Q5_1_LUT):
    _table.flags.writeable = False
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class FormatSpec:
    """Static description of a format: ``bits``, ``group_size`` (``None`` = per output channel, G = K),
    ``lut`` (float32 [2 ** bits] for 4-/5-bit formats, else ``None``) and ``has_offsets``."""

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
    "q5_0": FormatSpec("q5_0", 5, 32, _Q5_0_LUT, False),
    "q5_1": FormatSpec("q5_1", 5, 32, _Q5_1_LUT, True),
}


def codes_layout(bits: int, out_channels: int, in_channels: int) -> Tuple[type, Tuple[int, int]]:
    """``(dtype, shape)`` of the codes of a ``bits``-bit weight ``[N, K]``: int8 ``[N, K]`` (8),
    uint8 ``[N, K // 2]`` (4), uint8 ``[N, K // 2 + K // 8]`` (5)."""
    if bits == 8:
        return np.int8, (out_channels, in_channels)
    return np.uint8, (out_channels, in_channels // 2 + (in_channels // 8 if bits == 5 else 0))


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
        codes: ``int8 [N, K]`` (8-bit), ``uint8 [N, K // 2]`` (4-bit, low nibble = even k) or
            ``uint8 [N, K // 2 + K // 8]`` (5-bit: low 4 bits as 4-bit, then the 5th bits).
        scales: ``float16 [N, K // G]``.
        offsets: ``float16 [N, K // G]`` (``q4_1``, ``q5_1``) or ``None``.
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
        code_dtype, code_shape = codes_layout(spec.bits, n, k)
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
        """float32 [2 ** bits] value of each 4-/5-bit code (``None`` for 8-bit formats)."""
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
    return weight


def _check_finite(chunk: np.ndarray) -> None:
    if not np.isfinite(chunk).all():
        raise ValueError("'weight' must be finite, but it contains NaN or Inf.")


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


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes ``[N, K]`` (0 .. 2 ** bits - 1) -> the packed layout of ``bits`` 4 or 5 (module doc)."""
    if bits == 4:
        return _pack_nibbles(codes)
    n, k = codes.shape
    fifth = np.packbits((codes >> np.uint8(4)).reshape(n, k // 8, 8), axis=-1, bitorder="little").reshape(n, k // 8)
    return np.concatenate([_pack_nibbles(codes & np.uint8(0x0F)), fifth], axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: packed uint8 codes of a 4- or 5-bit weight -> uint8 ``[N, K]``."""
    if bits == 4:
        return unpack_nibbles(packed)
    k = packed.shape[1] // 5 * 8  # K // 2 + K // 8 = 5 K / 8 bytes
    fifth = np.unpackbits(packed[:, k // 2:], axis=1, bitorder="little")
    return unpack_nibbles(packed[:, :k // 2]) | (fifth << np.uint8(4))


_CHUNK_ELEMENTS = 1 << 18  # rows are quantised in chunks of about this many weights (bounded scratch memory)


def _nearest_nf4(x: np.ndarray) -> np.ndarray:
    """Index of the nearest NF4 value: the number of midpoints between neighbours that ``x`` exceeds
    (15 vectorised comparisons; ~10x faster than a binary search per element)."""
    codes = np.zeros(x.shape, dtype=np.uint8)
    above = np.empty(x.shape, dtype=bool)
    for midpoint in _NF4_MIDPOINTS:
        np.greater(x, midpoint, out=above)
        codes += above
    return codes


def _quantize_blocks(blocks: np.ndarray, format: str):
    """float32 blocks [R, K // G, G] -> (integer codes [R, K // G, G], float16 scales, float16 offsets or None)."""
    offsets = None
    if format in ("int8", "nf4"):
        absmax = np.abs(blocks).max(axis=2)
        scales = _to_float16(absmax / np.float32(127) if format == "int8" else absmax, "scales")
        scale = scales.astype(np.float32)[..., None]
        x = np.divide(blocks, scale, out=np.zeros_like(blocks), where=scale != 0)
        if format == "int8":
            codes = np.clip(_round_half_away(x), -127, 127).astype(np.int8)
        else:
            codes = _nearest_nf4(x)
    elif format == "q8_0":
        d = np.abs(blocks).max(axis=2) / np.float32(127)
        codes = _round_half_away(blocks * _inverse(d)[..., None]).astype(np.int8)
        scales = _to_float16(d, "scales")
    elif format == "q4_0":
        index = np.abs(blocks).argmax(axis=2)[..., None]
        d = np.take_along_axis(blocks, index, axis=2)[..., 0] / np.float32(-8) + np.float32(0)  # -0 -> +0
        codes = np.minimum(np.trunc(blocks * _inverse(d)[..., None] + np.float32(8.5)), 15).astype(np.uint8)
        scales = _to_float16(d, "scales")
    elif format == "q5_0":
        index = np.abs(blocks).argmax(axis=2)[..., None]
        d = np.take_along_axis(blocks, index, axis=2)[..., 0] / np.float32(-16) + np.float32(0)  # -0 -> +0
        codes = np.minimum(np.trunc(blocks * _inverse(d)[..., None] + np.float32(16.5)), 31).astype(np.uint8)
        scales = _to_float16(d, "scales")
    else:  # q4_1, q5_1
        top = 15 if format == "q4_1" else 31
        low, high = blocks.min(axis=2), blocks.max(axis=2)
        d = (high - low) / np.float32(top)
        codes = np.minimum(np.trunc((blocks - low[..., None]) * _inverse(d)[..., None] + np.float32(0.5)),
                           top).astype(np.uint8)
        scales = _to_float16(d, "scales")
        offsets = _to_float16(low, "offsets")
    return codes, scales, offsets


def quantize(weight: np.ndarray, format: str) -> QuantizedTensor:
    """Quantise a float weight ``[N, K]`` (computation in float32) to ``format``; see the module doc.

    Rows are processed in chunks of about 2^18 weights, so the scratch memory beyond the result is a few MB
    whatever the size of the weight (no float32 copy of a float16/float64 weight is made).

    Raises:
        TypeError: ``weight`` is not a floating numpy array, or ``format`` not a str.
        ValueError: ``weight`` not 2-D or not finite, unknown ``format``, K not a multiple of the group size
            (named ``in_channels``), or scales beyond float16's range.
    """
    spec = format_spec(format)
    w = _check_weight(weight)
    n, k = w.shape
    group = _check_group(format, k)
    code_dtype, code_shape = codes_layout(spec.bits, n, k)
    codes = np.empty(code_shape, dtype=code_dtype)
    scales = np.empty((n, k // group), dtype=np.float16)
    offsets = np.empty((n, k // group), dtype=np.float16) if spec.has_offsets else None
    rows = max(1, _CHUNK_ELEMENTS // k)
    for r in range(0, n, rows):
        blocks = w[r:r + rows].astype(np.float32, copy=False).reshape(-1, k // group, group)
        _check_finite(blocks)
        chunk_codes, scales[r:r + rows], chunk_offsets = _quantize_blocks(blocks, format)
        chunk_codes = chunk_codes.reshape(-1, k)
        codes[r:r + rows] = chunk_codes if spec.bits == 8 else pack_codes(chunk_codes, spec.bits)
        if offsets is not None:
            offsets[r:r + rows] = chunk_offsets
    return QuantizedTensor(format, (n, k), codes, scales, offsets)


def dequantize(q: QuantizedTensor, dtype=np.float32) -> np.ndarray:
    """The weight ``[N, K]`` in ``dtype`` (float32 or float64; float16 computes in float32 and casts):
    ``v(n, k) * scales[n, k // G] (+ offsets[n, k // G])``, v the code (8-bit) or ``lut[code]`` (4-/5-bit)."""
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"'q' must be a QuantizedTensor, but got {type(q).__name__}.")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"'dtype' must be a floating dtype, but got {dtype}.")
    compute = np.float64 if dtype == np.float64 else np.float32
    n, k = q.shape
    group = q.group_size
    values = q.codes.astype(compute) if q.bits == 8 else q.lut.astype(compute)[unpack_codes(q.codes, q.bits)]
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
