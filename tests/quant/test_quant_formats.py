"""mindpet.quant.formats against an independent numpy reference written here (per block, per row), the
``gguf`` package's own quantiser for the GGUF formats, error bounds, idempotence and errors."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mindpet.quant import FORMATS, QuantizedTensor, dequantize, format_spec, quantize, requantize

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]
GROUP = {"int8": None, "nf4": 64, "q4_0": 32, "q4_1": 32, "q8_0": 32, "q5_0": 32, "q5_1": 32}
SHAPES = {"int8": (7, 13), "nf4": (5, 192), "q4_0": (3, 96), "q4_1": (9, 64), "q8_0": (6, 160), "q5_0": (5, 128),
          "q5_1": (4, 96)}


def _weight(shape, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * rng.uniform(0.01, 3.0, size=(shape[0], 1))
    w[0, : min(shape[1], 64)] = 0.0  # an all-zero block / row start
    return w.astype(np.float32)


# ------------------------------------------------------------ the reference (no mindpet helper is used)

def _ref_block(block, fmt):
    """(integer codes 0..15 or -127..127, scale float16, offset float16 or None) of one block, as the
    layout page defines them (GGUF formats: ggml's float32 arithmetic)."""
    b = block.astype(np.float32)
    if fmt == "int8" or fmt == "nf4":
        s = np.float16(np.abs(b).max() / np.float32(127) if fmt == "int8" else np.abs(b).max())
        x = b / np.float32(s) if s != 0 else np.zeros_like(b)
        if fmt == "int8":
            return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), -127, 127).astype(int), s, None
        return np.array([int(np.argmin(np.abs(np.array(NF4, np.float32) - v))) for v in x]), s, None
    if fmt == "q8_0":
        d = np.float32(np.abs(b).max() / np.float32(127))
        inv = np.float32(1) / d if d else np.float32(0)
        x = b * inv
        return (np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))).astype(int), np.float16(d), None
    if fmt in ("q4_0", "q5_0"):  # levels 16 / 32: d = (value of largest magnitude) / -(levels / 2)
        half = 8 if fmt == "q4_0" else 16
        d = np.float32(b[np.argmax(np.abs(b))] / np.float32(-half))
        inv = np.float32(1) / d if d else np.float32(0)
        return np.minimum(2 * half - 1, np.trunc(b * inv + np.float32(half + 0.5))).astype(int), np.float16(d), None
    top = 15 if fmt == "q4_1" else 31
    lo, hi = b.min(), b.max()
    d = np.float32((hi - lo) / np.float32(top))
    inv = np.float32(1) / d if d else np.float32(0)
    return np.minimum(top, np.trunc((b - lo) * inv + np.float32(0.5))).astype(int), np.float16(d), np.float16(lo)


def _ref_value(code, fmt):
    return {"nf4": lambda c: NF4[c], "q4_0": lambda c: c - 8, "q5_0": lambda c: c - 16}.get(fmt, lambda c: c)(code)


def _ref_dequantize(w, fmt):
    """float64 dequantised weight of the reference quantisation, plus per-element scale and codes."""
    n, k = w.shape
    g = GROUP[fmt] or k
    out = np.zeros((n, k))
    codes = np.zeros((n, k), dtype=int)
    scale = np.zeros((n, k))
    for r in range(n):
        for j in range(0, k, g):
            c, s, m = _ref_block(w[r, j:j + g], fmt)
            vals = np.array([_ref_value(int(ci), fmt) for ci in c], dtype=np.float64)
            out[r, j:j + g] = vals * float(s) + (float(m) if m is not None else 0.0)
            codes[r, j:j + g] = c
            scale[r, j:j + g] = float(s)
    return out, codes, scale


def _unpacked_codes(q):
    """Codes [N, K] read element by element from the documented layout."""
    if q.bits == 8:
        return q.codes.astype(int)
    n, k = q.shape
    out = np.zeros((n, k), dtype=int)
    for r in range(n):
        for j in range(k):
            out[r, j] = (int(q.codes[r, j // 2]) >> (4 * (j % 2))) & 0xF
            if q.bits == 5:  # 5th bit: bit j % 8 of byte K / 2 + j // 8
                out[r, j] += 16 * ((int(q.codes[r, k // 2 + j // 8]) >> (j % 8)) & 1)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_dequantize_match_the_reference(fmt):
    w = _weight(SHAPES[fmt])
    q = quantize(w, fmt)
    want, codes, _ = _ref_dequantize(w, fmt)
    np.testing.assert_array_equal(_unpacked_codes(q), codes)
    np.testing.assert_array_equal(dequantize(q, np.float64), want)
    np.testing.assert_allclose(dequantize(q), want, rtol=1e-6, atol=1e-7)
    assert dequantize(q).dtype == np.float32 and dequantize(q, np.float16).dtype == np.float16


@pytest.mark.parametrize("fmt", FORMATS)
def test_layout_dtypes_shapes_and_bytes(fmt):
    n, k = SHAPES[fmt]
    q = quantize(_weight((n, k)), fmt)
    g = GROUP[fmt] or k
    spec = format_spec(fmt)
    assert q.shape == (n, k) and q.group_size == g and q.bits == spec.bits
    assert q.codes.dtype == (np.int8 if spec.bits == 8 else np.uint8)
    assert q.codes.shape == {8: (n, k), 4: (n, k // 2), 5: (n, k // 2 + k // 8)}[spec.bits]
    assert q.scales.dtype == np.float16 and q.scales.shape == (n, k // g)
    assert (q.offsets is not None) == (fmt in ("q4_1", "q5_1"))
    assert q.nbytes == q.codes.nbytes + q.scales.nbytes + (q.offsets.nbytes if q.offsets is not None else 0)
    bits = {"int8": 8 + 16 / k, "nf4": 4.25, "q4_0": 4.5, "q4_1": 5.0, "q8_0": 8.5, "q5_0": 5.5, "q5_1": 6.0}[fmt]
    assert q.nbytes * 8 == pytest.approx(bits * n * k)
    if spec.bits in (4, 5):
        want = {"nf4": NF4, "q4_0": list(range(-8, 8)), "q4_1": list(range(16)), "q5_0": list(range(-16, 16)),
                "q5_1": list(range(32))}[fmt]
        assert q.lut.dtype == np.float32 and q.lut.tolist() == [np.float32(v) for v in want]
    else:
        assert q.lut is None


def test_nibble_order_low_is_even_k():
    w = np.zeros((1, 32), np.float32)
    w[0, 0], w[0, 1] = -8.0, 7.0  # q4_0: d = 1, codes 0 and 15
    q = quantize(w, "q4_0")
    assert q.codes[0, 0] == 0x00 | (15 << 4)
    assert q.codes[0, 1] == 8 | (8 << 4)


def test_fifth_bit_order():
    w = np.zeros((1, 64), np.float32)
    # q5_0 block 0: d = 1, codes 0 (k = 0), 31 (k = 9), 16 elsewhere; block 1: d = -1/16, code 0 at k = 63
    w[0, 0], w[0, 9], w[0, 63] = -16.0, 15.0, 1.0
    q = quantize(w, "q5_0")
    assert q.codes.shape == (1, 40)
    assert q.codes[0, 0] == 0x00 and q.codes[0, 4] == 0xF0  # low 4 bits: k = 8 (16 -> 0) low, k = 9 (31 -> 15) high
    fifth = q.codes[0, 32:]  # bit k % 8 of byte k // 8: code 0 -> 0, the others 16..31 -> 1
    assert fifth[0] == 0xFE and fifth[1] == 0xFF and fifth[2] == 0xFF and fifth[3] == 0xFF
    assert fifth[7] == 0x7F  # k = 63: code 16 - 16 = 0 (w = -16 d)


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0", "q5_0", "q5_1"])
def test_gguf_formats_bit_exact_with_the_gguf_quantiser(fmt):
    from gguf import GGMLQuantizationType as T
    from gguf import quants
    qtype = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q8_0": T.Q8_0, "q5_0": T.Q5_0, "q5_1": T.Q5_1}[fmt]
    w = _weight((33, 256), seed=3)
    want = quants.dequantize(quants.quantize(w, qtype), qtype).reshape(w.shape)
    np.testing.assert_array_equal(dequantize(quantize(w, fmt)), want)


@pytest.mark.parametrize("fmt", FORMATS)
def test_error_bounds(fmt):
    w = _weight(SHAPES[fmt], seed=1).astype(np.float64)
    q = quantize(w, fmt)
    err = np.abs(dequantize(q, np.float64) - w)
    n, k = w.shape
    g = GROUP[fmt] or k
    blocks = w.reshape(n, k // g, g)
    s = np.repeat(q.scales.astype(np.float64), g, axis=1)
    if fmt == "int8":
        bound = s / 2
    elif fmt == "nf4":
        gap = np.max(np.diff(NF4))
        absmax = np.repeat(np.abs(blocks).max(axis=2), g, axis=1)
        bound = gap / 2 * absmax * (1 + 2 ** -10) + np.abs(absmax - s)
    elif fmt == "q8_0":
        bound = np.abs(s) * (0.5 + 127 * 2 ** -11)
    elif fmt in ("q4_0", "q5_0"):  # truncation = round half up, clipped to the top code -> at most one step
        bound = np.abs(s) * (1 + (8 if fmt == "q4_0" else 16) * 2 ** -10)
    else:
        lo = np.repeat(blocks.min(axis=2), g, axis=1)
        bound = s * (0.5 + (15 if fmt == "q4_1" else 31) * 2 ** -10) + np.abs(lo) * 2 ** -11
    assert np.all(err <= bound + 1e-12), float(np.max(err - bound))


@pytest.mark.parametrize("fmt", FORMATS)
def test_requantizing_the_dequantized_weight_is_idempotent(fmt):
    q = quantize(_weight(SHAPES[fmt], seed=2), fmt)
    again = quantize(dequantize(q), fmt)
    np.testing.assert_array_equal(again.codes, q.codes)
    np.testing.assert_array_equal(again.scales.view(np.uint16), q.scales.view(np.uint16))
    if q.offsets is not None:
        np.testing.assert_array_equal(again.offsets.view(np.uint16), q.offsets.view(np.uint16))


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_rows_dequantize_to_zero(fmt):
    w = np.zeros((2, 64), np.float32)
    assert np.array_equal(dequantize(quantize(w, fmt)), w)


def test_large_tensor_is_quantized_vectorised():
    # the shape of SmolLM2's token embedding; a per-block Python loop would take minutes
    w = np.random.default_rng(0).standard_normal((49152, 576)).astype(np.float32)
    q = quantize(w, "nf4")
    assert q.codes.shape == (49152, 288)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantizing_makes_no_float32_copy(fmt):
    w = np.random.default_rng(0).standard_normal((8192, 1024)).astype(np.float16)
    tracemalloc.start()
    try:
        q = quantize(w, fmt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the result (<= 8.5 bits/weight) plus row-chunk scratch; a float32 copy alone would be 1.0
    assert peak < 0.6 * 4 * w.size, peak / (4 * w.size)
    assert q.shape == w.shape


def test_requantize_keeps_the_first_error_and_adds_the_second():
    w = _weight((6, 128), seed=5)
    q41 = quantize(w, "q4_1")
    assert requantize(q41, "q4_1") is q41
    q8 = requantize(q41, "q8_0")
    assert q8.format == "q8_0"
    step = np.repeat(q8.scales.astype(np.float64), 32, axis=1)
    # q8_0 of the q4_1 weight: within half a q8_0 step (+ float16 rounding of d) of the q4_1 weight ...
    assert np.all(np.abs(dequantize(q8, np.float64) - dequantize(q41, np.float64)) <= step * (0.5 + 127 * 2 ** -11))
    # ... and no closer to the float weight than q4_1 allows
    assert np.abs(dequantize(q8, np.float64) - w).max() > 0.5 * np.abs(dequantize(q41, np.float64) - w).max()
    with pytest.raises(TypeError, match="'q' must be a QuantizedTensor"):
        requantize(w, "q8_0")
    with pytest.raises(ValueError, match="'format'"):
        requantize(q41, "q2_k")


def test_take_rows_permutes_without_dequantising():
    w = _weight((8, 64), seed=4)
    perm = np.array([7, 0, 3, 1, 2, 6, 5, 4])
    for fmt in FORMATS:
        q = quantize(w, fmt)
        np.testing.assert_array_equal(dequantize(q.take_rows(perm)), dequantize(q)[perm])
    with pytest.raises(ValueError, match="rows"):
        q.take_rows([8])
    with pytest.raises(TypeError, match="rows"):
        q.take_rows(np.zeros(2))


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("weight, exc, match", [
    ([[1.0, 2.0]], TypeError, "'weight' must be a numpy array"),
    (np.ones((2, 32), np.int32), TypeError, "'weight' must have a floating dtype"),
    (np.ones((2, 2, 32), np.float32), ValueError, "'weight' must be 2-D"),
    (np.ones(32, np.float32), ValueError, "'weight' must be 2-D"),
    (np.full((2, 32), np.nan, np.float32), ValueError, "'weight' must be finite"),
    (np.full((2, 32), np.inf, np.float32), ValueError, "'weight' must be finite"),
    (np.full((2, 32), 1e9, np.float32), ValueError, "too large for float16"),
])
def test_bad_weight(weight, exc, match):
    with pytest.raises(exc, match=match):
        quantize(weight, "q4_0")


def test_bad_format():
    with pytest.raises(ValueError, match="'format' must be one of"):
        quantize(np.ones((2, 32), np.float32), "q6_k")
    with pytest.raises(TypeError, match="'format' must be a str"):
        quantize(np.ones((2, 32), np.float32), 4)
    with pytest.raises(ValueError, match="'format'"):
        format_spec("nf8")


@pytest.mark.parametrize("fmt, k, group", [("q4_0", 48, 32), ("q4_1", 31, 32), ("q8_0", 100, 32), ("nf4", 96, 64),
                                           ("int8", 0, 0), ("q5_0", 48, 32), ("q5_1", 40, 32)])
def test_in_channels_not_a_multiple_of_the_group_size(fmt, k, group):
    with pytest.raises(ValueError, match=rf"in_channels \({k}\) must be a positive multiple of the group size {group}"):
        quantize(np.ones((2, k), np.float32), fmt)


def test_int8_accepts_any_in_channels():
    w = _weight((3, 7))
    assert quantize(w, "int8").scales.shape == (3, 1)


def test_quantized_tensor_validates_its_fields():
    q = quantize(_weight((4, 64)), "q4_1")
    with pytest.raises(ValueError, match="'codes' of a 'q4_1' QuantizedTensor must be uint8 \\[4, 32\\]"):
        QuantizedTensor("q4_1", (4, 64), q.codes.astype(np.int8), q.scales, q.offsets)
    with pytest.raises(ValueError, match="'scales'.*float16 \\[4, 2\\]"):
        QuantizedTensor("q4_1", (4, 64), q.codes, q.scales.astype(np.float32), q.offsets)
    with pytest.raises(TypeError, match="'offsets'.*numpy array"):
        QuantizedTensor("q4_1", (4, 64), q.codes, q.scales, None)
    with pytest.raises(ValueError, match="'offsets' must be None"):
        QuantizedTensor("q4_0", (4, 64), q.codes, q.scales, q.offsets)
    with pytest.raises(ValueError, match="in_channels"):
        QuantizedTensor("q4_1", (4, 66), q.codes, q.scales, q.offsets)
    with pytest.raises(ValueError, match="'format'"):
        QuantizedTensor("q4_2", (4, 64), q.codes, q.scales, q.offsets)
    with pytest.raises(ValueError, match="'codes' of a 'q5_1' QuantizedTensor must be uint8 \\[4, 40\\]"):
        QuantizedTensor("q5_1", (4, 64), q.codes, q.scales, q.offsets)  # 4-bit codes without the 5th bits
    with pytest.raises(TypeError, match="'q' must be a QuantizedTensor"):
        dequantize(q.codes)
