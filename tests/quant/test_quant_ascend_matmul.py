"""The Ascend path of a LoRA layer on a quantised base, on CPU (never run on an NPU): the in-graph mapping of the
unified layout onto WeightQuantBatchMatmul's inputs, checked through the documented formula against a float64
dequantisation; the layer's selection of the path on Ascend; its forward and every gradient with the operator
emulated by MindSpore ops (``y = x @ ((w + offset) * scale)``, transpose_weight=True), GRAPH and PYNATIVE."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype

from mindpet.delta.lora import LoRADense
from mindpet.kernels import backend as kbackend
from mindpet.quant import QuantizedDense, quantize
from mindpet.quant import ascend_matmul
from mindpet.quant.ascend import WQBMMArgs, emulate_weight_quant_matmul

from quant_testing import dequantize_f64, Weighted

CASES = [("int8", (7, 64)), ("q8_0", (7, 96)), ("q8_0", (5, 32)), ("q4_0", (6, 96)), ("q4_0", (7, 32)),
         ("q4_1", (7, 96)), ("q4_1", (4, 32)), ("q5_0", (7, 96)), ("q5_0", (5, 32)), ("q5_1", (7, 96)),
         ("q5_1", (4, 64))]
CENTER = {"q4_1": 8, "q5_1": 16}  # offset formats: the offset is CENTER + m / d


def _quantized(fmt, shape, seed=0, constant_group=False):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.3 + rng.normal(0, 0.2, (shape[0], 1))).astype(np.float32)
    if constant_group:
        w[1, :32] = 0.37  # q4_1/q5_1: a group with d == 0, every weight m
    return quantize(w, fmt)


def _offsets(q):
    return Tensor(q.offsets) if q.offsets is not None else Tensor(np.zeros(1, np.float16))


class _Args(nn.Cell):
    def __init__(self, fmt, group):
        super().__init__()
        self.op = ascend_matmul.AscendQuantMatmul(fmt, group, matmul=_EmulatedOperator())

    def construct(self, codes, scales, offsets):
        return self.op.antiquant_args(codes, scales, offsets)


class _EmulatedOperator(nn.Cell):
    """The documented operator with transpose_weight=True, in MindSpore ops: ``y = x @ ((w^T + o) * s)``
    (s, o repeated over each group of k, or per channel), computed in float32, output float16."""

    def construct(self, x, weight, scale, offset, quant_scale, quant_offset, bias):  # pylint: disable=unused-argument
        n, k = weight.shape
        groups = 1 if scale.ndim == 1 else scale.shape[0]
        w = ops.cast(weight, mstype.float32).reshape((n, groups, k // groups))
        if offset is not None:
            w = w + ops.cast(offset, mstype.float32).reshape((groups, n)).T.reshape((n, groups, 1))
        w = (w * ops.cast(scale, mstype.float32).reshape((groups, n)).T.reshape((n, groups, 1))).reshape((n, k))
        return ops.cast(ops.matmul(ops.cast(x, mstype.float32), w.T), mstype.float16)


def _offset_bound(q):
    """|deq - mapped| of q4_1/q5_1: the offset 8 (16) + m / d is rounded to float16 once (zero for d == 0 groups)."""
    g = q.group_size
    d = np.repeat(q.scales.astype(np.float64), g, axis=1)
    ratio = CENTER[q.format] + np.repeat(q.offsets.astype(np.float64), g, axis=1) / np.where(d == 0, 1, d)
    return np.where(d == 0, 0, np.abs(ratio) * 2.0 ** -11 * np.abs(d))


@pytest.mark.parametrize("fmt, shape", CASES)
def test_mapped_arguments_give_the_dequantized_weight(mode, fmt, shape):
    n, k = shape
    q = _quantized(fmt, shape, constant_group=fmt in CENTER)
    weight, scale, offset = (None if t is None else t.asnumpy() for t in
                             _Args(fmt, q.group_size)(Tensor(q.codes), Tensor(q.scales), _offsets(q)))
    per_channel = q.group_size == k
    assert weight.dtype == np.int8 and weight.shape == (n, k)
    assert scale.dtype == np.float16 and scale.shape == ((n,) if per_channel else (k // q.group_size, n))
    assert (offset is None) == (fmt not in CENTER)
    if fmt in ("q4_0", "q4_1"):
        assert weight.min() >= -8 and weight.max() <= 7
    if fmt in ("q5_0", "q5_1"):
        assert weight.min() >= -16 and weight.max() <= 15 and (weight < -8).any() and (weight > 7).any()
    args = WQBMMArgs(weight, scale, offset, 0 if per_channel else q.group_size, True, 8, shape)
    w_op = emulate_weight_quant_matmul(np.eye(k), args).T  # the operator's dequantised weight [N, K]
    want = dequantize_f64(q.codes, q.scales, q.offsets, fmt)
    if fmt in CENTER:
        assert np.all(np.abs(w_op - want) <= _offset_bound(q) + 1e-12)
        assert np.array_equal(w_op[1, :32], want[1, :32])  # the d == 0 group is exact
    else:
        np.testing.assert_array_equal(w_op, want)


def test_nf4_has_no_mapping_and_bad_format_is_an_error():
    assert ascend_matmul.weight_quant_matmul("nf4", 64) is None
    with pytest.raises(ValueError, match="'format' must be one of"):
        ascend_matmul.AscendQuantMatmul("nf4", 64)


@pytest.fixture
def on_ascend(monkeypatch):
    """Layers built inside see device target Ascend, with the operator emulated (it has no CPU kernel)."""
    real = ascend_matmul.weight_quant_matmul
    monkeypatch.setattr(kbackend, "device_target", lambda: "Ascend")
    monkeypatch.setattr(ascend_matmul, "weight_quant_matmul",
                        lambda fmt, group: real(fmt, group, matmul=_EmulatedOperator()))


def test_layer_selection_on_ascend(on_ascend):  # pylint: disable=unused-argument,redefined-outer-name
    for fmt, want in (("q4_0", "ascend"), ("q4_1", "ascend"), ("q8_0", "ascend"), ("int8", "ascend"),
                      ("q5_0", "ascend"), ("q5_1", "ascend"), ("nf4", "composed")):
        layer = QuantizedDense.from_quantized(_quantized(fmt, (8, 64)))
        assert layer.backend == want, fmt
    layer = QuantizedDense.from_quantized(_quantized("q4_0", (8, 64)), backend="composed")
    assert layer.backend == "composed"


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q8_0", "int8", "q5_0", "q5_1"])
def test_lora_on_the_ascend_path_forward_and_gradients(mode, on_ascend, fmt):  # pylint: disable=unused-argument,redefined-outer-name
    n, k, r = 24, 64, 4
    q = _quantized(fmt, (n, k), seed=3)
    rng = np.random.default_rng(4)
    bias = (rng.standard_normal(n) * 0.1).astype(np.float32)
    base = QuantizedDense.from_quantized(q, bias=bias, compute_dtype=ms.float32)
    layer = LoRADense(k, n, r, 8, 0.0, has_bias=True, compute_dtype=ms.float32, base=base)
    assert layer.kernel.impl == "ascend"
    a = (rng.standard_normal((r, k)) * 0.1).astype(np.float32)
    b = (rng.standard_normal((n, r)) * 0.1).astype(np.float32)
    layer.mindpet_delta_lora_a.set_data(Tensor(a))
    layer.mindpet_delta_lora_b.set_data(Tensor(b))
    x = rng.standard_normal((2, 5, k)).astype(np.float32)
    cot = rng.standard_normal((2, 5, n)).astype(np.float32)

    w = dequantize_f64(q.codes, q.scales, q.offsets, fmt)
    x64 = x.reshape(-1, k).astype(np.float16).astype(np.float64)  # the operator takes float16 x
    c64, a64, b64, s = cot.reshape(-1, n).astype(np.float64), a.astype(np.float64), b.astype(np.float64), layer.scaling
    expected = x64 @ w.T + bias + s * (x.reshape(-1, k) @ a64.T) @ b64.T
    y = layer(Tensor(x)).asnumpy().reshape(-1, n)
    tol = 2e-3 * np.abs(x64) @ np.abs(w).T + 1e-3 * np.abs(expected) + 1e-4  # float16 x, output, and q4_1 offset
    assert np.all(np.abs(y - expected) <= tol)

    grad = ms.grad(Weighted(layer, cot), grad_position=0, weights=[layer.mindpet_delta_lora_a,
                                                                   layer.mindpet_delta_lora_b])
    dx, (da, db) = grad(Tensor(x))
    want_dx = c64 @ w + s * (c64 @ b64) @ a64
    tol_dx = 2e-3 * np.abs(c64) @ np.abs(w) + 1e-4
    assert np.all(np.abs(dx.asnumpy().reshape(-1, k) - want_dx) <= tol_dx)
    np.testing.assert_allclose(da.asnumpy(), s * (c64 @ b64).T @ x.reshape(-1, k), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(db.asnumpy(), s * c64.T @ (x.reshape(-1, k) @ a64.T), rtol=1e-4, atol=1e-5)
