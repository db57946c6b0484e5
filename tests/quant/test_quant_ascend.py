"""mindpet.quant.ascend on CPU: the WeightQuantBatchMatmul argument mapping checked through a numpy emulation
of the documented formula against x @ dequantize(q).T (float64), layouts, the q4_1/q5_1 fallbacks, nf4 refused,
and the Cell constructing (it cannot run here: the primitive has no CPU kernel; never run on an NPU)."""
from __future__ import annotations

import numpy as np
import pytest

from mindpet.quant import QuantizedTensor, dequantize, quantize
from mindpet.quant.ascend import WeightQuantLinear, emulate_weight_quant_matmul, to_weight_quant_matmul

CASES = [("int8", (7, 13)), ("int8", (4, 64)), ("q8_0", (7, 96)), ("q8_0", (5, 32)), ("q4_0", (7, 96)),
         ("q4_0", (6, 160)), ("q4_0", (3, 32)), ("q4_1", (7, 96)), ("q4_1", (8, 64)), ("q4_1", (5, 32)),
         ("q5_0", (7, 96)), ("q5_0", (3, 32)), ("q5_1", (7, 96)), ("q5_1", (6, 64)), ("q5_1", (5, 32))]
WITH_OFFSET = {"q4_1": 8, "q5_1": 16}  # the offset c + m / d of the affine formats with m, c its code centre


def _weight(shape, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * rng.uniform(0.05, 2.0, size=(shape[0], 1)) + rng.normal(0, 0.5, (shape[0], 1))
    return w.astype(np.float32)


def _layouts(fmt, n):
    return [None, True] + ([False] if not (fmt in ("q4_0", "q4_1") and n % 2) else [])


@pytest.mark.parametrize("fmt, shape", CASES)
def test_emulated_operator_matches_the_dequantized_matmul(fmt, shape):
    n, k = shape
    q = quantize(_weight(shape), fmt)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, k))
    bias = rng.standard_normal(n)
    want = x @ dequantize(q, np.float64).T + bias
    for transpose_weight in _layouts(fmt, n):
        args = to_weight_quant_matmul(q, transpose_weight)
        got = emulate_weight_quant_matmul(x, args, bias)
        w_got = emulate_weight_quant_matmul(np.eye(k), args).T  # the operator's dequantised weight [N, K]
        if fmt not in WITH_OFFSET:
            np.testing.assert_array_equal(w_got, dequantize(q, np.float64))
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        else:  # the offset 8 + m / d (16 + m / d) is rounded to float16 once
            g = q.group_size
            d = np.repeat(q.scales.astype(np.float64), g, axis=1)
            ratio = WITH_OFFSET[fmt] + np.repeat(q.offsets.astype(np.float64), g, axis=1) / np.where(d == 0, 1, d)
            bound = np.where(d == 0, 0, np.abs(ratio) * 2.0 ** -11 * d)
            assert np.all(np.abs(w_got - dequantize(q, np.float64)) <= bound + 1e-15)
            assert np.all(np.abs(got - want) <= np.abs(x) @ bound.T + 1e-12)


@pytest.mark.parametrize("fmt, shape, transpose, weight_shape, weight_dtype, scale_shape, group", [
    ("int8", (7, 13), None, (7, 13), np.int8, (7,), 0),
    ("q8_0", (7, 96), None, (96, 7), np.int8, (3, 7), 32),
    ("q8_0", (7, 96), True, (7, 96), np.int8, (3, 7), 32),
    ("q4_0", (6, 96), None, (96, 3), np.int8, (3, 6), 32),
    ("q4_0", (7, 96), None, (7, 48), np.int8, (3, 7), 32),  # odd N: int4 packed along K, transposed
    ("q4_1", (6, 64), True, (6, 32), np.int8, (2, 6), 32),
    ("q4_1", (6, 32), None, (6, 16), np.int8, (6,), 0),  # one group per row: per-channel
    ("q5_0", (7, 96), None, (96, 7), np.int8, (3, 7), 32),  # 5-bit: int8 codes, any N
    ("q5_1", (7, 64), True, (7, 64), np.int8, (2, 7), 32),
])
def test_layouts(fmt, shape, transpose, weight_shape, weight_dtype, scale_shape, group):
    args = to_weight_quant_matmul(quantize(_weight(shape), fmt), transpose)
    weight, scale, offset, group_size, transpose_weight = args
    assert weight.shape == weight_shape and weight.dtype == weight_dtype
    assert scale.shape == scale_shape and scale.dtype == np.float16
    assert group_size == group
    assert transpose_weight == (weight_shape[0] == shape[0])
    assert (offset is not None) == (fmt in WITH_OFFSET)
    if offset is not None:
        assert offset.shape == scale.shape and offset.dtype == np.float16


def test_int4_is_twos_complement_even_index_in_the_low_nibble():
    w = np.zeros((2, 64), np.float32)
    w[:, 0], w[:, 1], w[:, 2], w[:, 3] = -8.0, 7.0, 1.0, -1.0  # q4_0: d = 1, signed codes -8, 7, 1, -1
    weight = to_weight_quant_matmul(quantize(w, "q4_0"), transpose_weight=True).weight
    assert weight.view(np.uint8)[0, 0] == 0x8 | (0x7 << 4)
    assert weight.view(np.uint8)[0, 1] == 0x1 | (0xF << 4)
    assert weight.view(np.uint8)[0, 2] == 0


def test_5_bit_codes_are_signed_int8_c_minus_16():
    w = np.zeros((2, 64), np.float32)
    w[:, 0], w[:, 1], w[:, 2], w[:, 3] = -16.0, 15.0, 1.0, -1.0  # q5_0: d = 1, signed codes -16, 15, 1, -1
    args = to_weight_quant_matmul(quantize(w, "q5_0"), transpose_weight=True)
    assert args.weight.dtype == np.int8 and args.weight[0, :4].tolist() == [-16, 15, 1, -1]
    assert args.weight[0, 4:].tolist() == [0] * 60


@pytest.mark.parametrize("fmt", ["q4_1", "q5_1"])
def test_groups_with_zero_scale_are_reencoded_exactly(fmt):
    q = quantize(_weight((4, 96)), fmt)
    scales, offsets = q.scales.copy(), q.offsets.copy()
    scales[0, 1], offsets[0, 1] = 0, 0.75  # a constant group: every weight 0.75 whatever its codes
    scales[2, 0], offsets[2, 0] = 0, 0.0
    q = QuantizedTensor(fmt, q.shape, q.codes, scales, offsets)
    args = to_weight_quant_matmul(q)
    w = emulate_weight_quant_matmul(np.eye(96), args).T
    np.testing.assert_array_equal(w[0, 32:64], 0.75)
    np.testing.assert_array_equal(w[2, :32], 0.0)
    assert np.isfinite(args.antiquant_offset).all()


@pytest.mark.parametrize("fmt", ["q4_1", "q5_1"])
def test_offset_beyond_float16_is_an_error(fmt):
    q = quantize(_weight((2, 64)), fmt)
    scales, offsets = q.scales.copy(), q.offsets.copy()
    scales[1, 1], offsets[1, 1] = np.float16(6e-8), np.float16(1.0)
    with pytest.raises(ValueError, match=f"a {fmt} group has .*beyond float16.*requantize"):
        to_weight_quant_matmul(QuantizedTensor(fmt, q.shape, q.codes, scales, offsets))


def test_nf4_is_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="format 'nf4' cannot run on WeightQuantBatchMatmul.*'q4_0' or 'int8'"):
        to_weight_quant_matmul(quantize(_weight((2, 64)), "nf4"))
    with pytest.raises(TypeError, match="'q' must be a QuantizedTensor"):
        to_weight_quant_matmul(np.zeros((2, 64)))
    with pytest.raises(ValueError, match=r"k and n in \[1, 65535\], but the weight is 65536 x 32"):
        to_weight_quant_matmul(quantize(np.zeros((65536, 32), np.float32), "q8_0"))
    with pytest.raises(ValueError, match="out_channels, which must be even"):
        to_weight_quant_matmul(quantize(_weight((3, 64)), "q4_0"), transpose_weight=False)


@pytest.mark.parametrize("fmt, shape", [("q4_1", (6, 96)), ("int8", (5, 13)), ("q4_0", (7, 64)), ("q5_1", (5, 64))])
def test_cell_constructs_and_holds_the_mapped_tensors(fmt, shape):
    import mindspore as ms
    q = quantize(_weight(shape), fmt)
    bias = np.arange(shape[0], dtype=np.float32)
    cell = WeightQuantLinear(q, bias=bias)
    args = to_weight_quant_matmul(q)
    assert cell.weight.dtype == (ms.qint4x2 if fmt.startswith("q4") else ms.int8)
    np.testing.assert_array_equal(cell.weight.asnumpy().view(np.int8), args.weight)
    np.testing.assert_array_equal(cell.antiquant_scale.asnumpy(), args.antiquant_scale)
    assert (cell.antiquant_offset is None) == (args.antiquant_offset is None)
    np.testing.assert_array_equal(cell.bias.asnumpy(), bias.astype(np.float16))
    assert not cell.trainable_params()
    assert cell.matmul.transpose_weight == args.transpose_weight
    assert cell.matmul.antiquant_group_size == args.group_size
    assert (cell.in_channels, cell.out_channels) == (shape[1], shape[0])
    with pytest.raises(ValueError, match="'bias' must have shape"):
        WeightQuantLinear(q, bias=np.zeros(shape[0] + 1))
    with pytest.raises(ValueError, match="nf4"):
        WeightQuantLinear(quantize(_weight((2, 64)), "nf4"))
