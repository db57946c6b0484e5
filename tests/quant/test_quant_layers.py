"""QuantizedDense and LoRADense on a quantised base: values and gradients against float64 numpy (the weight
dequantised by the test's own reading of the layout), GRAPH and PYNATIVE, composed and fused; the base is
never trainable; errors name their argument."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.delta.lora import LoRADense
from mindpet.graph import freeze_delta, freeze_modules
from mindpet.quant import QuantizedDense, QuantizedTensor, quantize

from quant_testing import BACKENDS, FORMATS, dequantize_f64, layer_dequantized, Weighted

K, N, R = 64, 40, 4


def _weights(fmt: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.2
    return quantize(w, fmt), rng.standard_normal(N).astype(np.float32) * 0.1


def _close(actual, expected, rel, name):
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    assert err <= rel * scale, f"{name}: max error {err:.3g} > {rel:.1g} * {scale:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantized_dense_forward_matches_float64(mode, fmt, backend):
    q, bias = _weights(fmt)
    layer = QuantizedDense.from_quantized(q, bias=bias, activation="relu", backend=backend)
    x = np.random.default_rng(1).standard_normal((2, 3, K)).astype(np.float32)
    y = layer(Tensor(x)).asnumpy()
    w = dequantize_f64(q.codes, q.scales, q.offsets, fmt)
    expected = np.maximum(x.astype(np.float64) @ w.T + bias, 0.0)
    assert y.shape == (2, 3, N) and y.dtype == np.float32
    _close(y, expected, 1e-5, f"{fmt} forward")
    assert layer.backend == ("composed" if backend == "composed" else "cpu")


def test_quantized_dense_parameters_frozen_and_bit_exact():
    q, bias = _weights("q4_1")
    layer = QuantizedDense.from_quantized(q, bias=bias)
    params = dict(layer.parameters_and_names())
    assert sorted(params) == ["bias", "weight_codes", "weight_offsets", "weight_scales"]
    assert not any(p.requires_grad for p in params.values()) and not layer.trainable_params()
    back = layer.quantized_tensor()
    for field in ("codes", "scales", "offsets"):
        assert np.array_equal(getattr(back, field), getattr(q, field)), field
    assert layer.nbytes == q.nbytes and layer.nbytes < N * K * 4 * 0.16


def _lora_on(fmt, backend, bias=True, dtype=ms.float32, dropout=0.0):
    q, b = _weights(fmt)
    base = QuantizedDense.from_quantized(q, bias=b if bias else None, compute_dtype=dtype, backend=backend)
    layer = LoRADense(K, N, R, 8, dropout, has_bias=bias, compute_dtype=dtype, backend=backend, base=base)
    rng = np.random.default_rng(2)
    layer.mindpet_delta_lora_a.set_data(Tensor(rng.standard_normal((R, K)).astype(np.float32) * 0.1))
    layer.mindpet_delta_lora_b.set_data(Tensor(rng.standard_normal((N, R)).astype(np.float32) * 0.1))
    return layer, base, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_lora_on_quantized_base_forward_and_gradients(mode, fmt, backend):
    layer, base, bias = _lora_on(fmt, backend)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, K)).astype(np.float32)
    cot = rng.standard_normal((2, 5, N)).astype(np.float32)
    w = layer_dequantized(base)
    a = layer.mindpet_delta_lora_a.asnumpy().astype(np.float64)
    b = layer.mindpet_delta_lora_b.asnumpy().astype(np.float64)
    s = layer.scaling
    x64, c64 = x.reshape(-1, K).astype(np.float64), cot.reshape(-1, N).astype(np.float64)
    expected = x64 @ w.T + bias + s * (x64 @ a.T) @ b.T
    _close(layer(Tensor(x)).asnumpy().reshape(-1, N), expected, 1e-5, f"{fmt} forward")

    grad = ms.grad(Weighted(layer, cot), grad_position=0,
                   weights=[layer.mindpet_delta_lora_a, layer.mindpet_delta_lora_b])
    dx, (da, db) = grad(Tensor(x))
    _close(dx.asnumpy().reshape(-1, K), c64 @ w + s * (c64 @ b) @ a, 1e-5, f"{fmt} dx")
    _close(da.asnumpy(), s * (c64 @ b).T @ x64, 1e-5, f"{fmt} dA")
    _close(db.asnumpy(), s * c64.T @ (x64 @ a.T), 1e-5, f"{fmt} dB")


def test_lora_on_quantized_base_takes_over_the_base_parameters():
    layer, base, _ = _lora_on("nf4", "composed")
    assert layer.weight is None and layer.quantized_base
    assert layer.weight_codes is base.weight_codes and layer.weight_scales is base.weight_scales
    assert layer.bias is base.bias
    names = sorted(n for n, _ in layer.parameters_and_names())
    assert names == ["bias", "mindpet_delta_lora_a", "mindpet_delta_lora_b", "weight_codes", "weight_scales"]
    assert sorted(p.name for p in layer.trainable_params()) == ["mindpet_delta_lora_a", "mindpet_delta_lora_b"]
    assert "base=nf4" in repr(layer)


def test_lora_on_quantized_base_float16(mode):
    layer, base, bias = _lora_on("q8_0", "composed", dtype=ms.float16)
    x = np.random.default_rng(4).standard_normal((6, K)).astype(np.float32)
    y = layer(Tensor(x)).asnumpy()
    w = layer_dequantized(base)
    a = layer.mindpet_delta_lora_a.asnumpy().astype(np.float64)
    b = layer.mindpet_delta_lora_b.asnumpy().astype(np.float64)
    expected = x @ w.T + bias.astype(np.float16) + layer.scaling * (x @ a.T) @ b.T
    assert y.dtype == np.float32
    _close(y, expected, 2e-2, "float16 forward")


class _Model(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.head = nn.Dense(N, 2)

    def construct(self, x):
        return self.head(self.layer(x))


def test_freezing_never_unfreezes_the_quantized_base():
    layer, _, _ = _lora_on("q4_0", "composed")
    model = _Model(layer)
    base_names = {"layer.weight_codes", "layer.weight_scales", "layer.bias"}
    result = freeze_delta(model, "lora")
    assert result.trainable == ["layer.mindpet_delta_lora_a", "layer.mindpet_delta_lora_b"]
    result = freeze_modules(model, exclude=["*"])  # everything trainable ... but the quantised base
    assert base_names.isdisjoint(result.trainable) and base_names <= set(result.untrainable)
    assert "head.weight" in result.trainable
    result = freeze_delta(model, "bitfit")  # every bias trainable ... but the base's
    assert "layer.bias" in result.untrainable and "head.bias" in result.trainable
    assert base_names.isdisjoint(p.name for p in model.trainable_params())


def test_quantized_dense_from_dense_keeps_bias_and_activation():
    dense = nn.Dense(K, N, activation="gelu")
    layer = QuantizedDense.from_dense(dense, "int8")
    assert layer.bias is dense.bias and not layer.bias.requires_grad
    x = np.random.default_rng(5).standard_normal((3, K)).astype(np.float32)
    w64 = dense.weight.asnumpy().astype(np.float64)
    # int8 per channel: |W - deq| <= scale / 2 per row, so the outputs stay close to the float layer's
    assert np.max(np.abs(layer_dequantized(layer) - w64)) <= np.max(np.abs(w64)) / 254 + 1e-7
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), dense(Tensor(x)).asnumpy(), atol=0.05)


def test_quantized_dense_errors_name_the_argument():
    with pytest.raises(ValueError, match="'format' must be one of"):
        QuantizedDense(K, N, "q5_k")
    with pytest.raises(TypeError, match="'format' must be a str"):
        QuantizedDense(K, N, 4)
    with pytest.raises(ValueError, match=r"'in_channels' \(48\) must be a multiple of the group size 32"):
        QuantizedDense(48, N, "q4_0")
    with pytest.raises(ValueError, match=r"'in_channels' \(96\) must be a multiple of the group size 64"):
        QuantizedDense(96, N, "nf4")
    with pytest.raises(ValueError, match="'out_channels'"):
        QuantizedDense(K, 0, "int8")
    with pytest.raises(TypeError, match="'has_bias'"):
        QuantizedDense(K, N, "int8", has_bias=1)
    with pytest.raises(TypeError, match="'weight' must be a QuantizedTensor"):
        QuantizedDense.from_quantized(np.zeros((N, K), np.float32))
    layer = QuantizedDense(K, N, "int8")  # K = 48 is fine per channel, and so is any K for int8
    assert QuantizedDense(48, N, "int8").quantized_weight.group_size == 48
    with pytest.raises(ValueError, match="last dimension of the input must equal 'in_channels'"):
        layer(Tensor(np.zeros((2, K + 1), np.float32)))
    with pytest.raises(ValueError, match="holds a int8 weight of shape"):
        layer.load_quantized_tensor(quantize(np.zeros((N, K), np.float32), "q8_0"))


def test_lora_base_errors_name_the_argument():
    base = QuantizedDense(K, N, "q8_0")
    with pytest.raises(TypeError, match="'base' must be a mindpet.quant.QuantizedDense"):
        LoRADense(K, N, R, 8, 0.0, base=nn.Dense(K, N))
    with pytest.raises(ValueError, match=r"'in_channels' \(32\) must equal the base's \(64\)"):
        LoRADense(32, N, R, 8, 0.0, base=base)
    with pytest.raises(ValueError, match="'has_bias'"):
        LoRADense(K, N, R, 8, 0.0, has_bias=False, base=base)
    with pytest.raises(ValueError, match="'compute_dtype' must be float32 or float16"):
        LoRADense(K, N, R, 8, 0.0, compute_dtype=ms.bfloat16, base=base)
    layer = LoRADense(K, N, R, 8, 0.0, compute_dtype=ms.float32, base=base)
    with pytest.raises(ValueError, match="runs on a quantised base"):
        layer.merge()
    with pytest.raises(ValueError, match="not supported on a quantised base"):
        layer.shard(strategy_lora_a_matmul=((1, 1), (1, 1)))


def test_from_quantized_takes_a_frozen_bias_parameter():
    q, bias = _weights("q8_0")
    param = Parameter(Tensor(bias), name="bias", requires_grad=True)
    layer = QuantizedDense.from_quantized(q, bias=param)
    assert layer.bias is param and not param.requires_grad
    assert isinstance(q, QuantizedTensor)


class _Stack(nn.Cell):
    def __init__(self, first, second):
        super().__init__()
        self.first = first
        self.second = second

    def construct(self, x):
        return (self.second(self.first(x)) ** 2).sum()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["q4_1", "q8_0"])
def test_lora_next_to_a_quantized_dense_gets_its_gradient(mode, backend, fmt):
    """A graph holding a QuantizedDense (no LoRA) and a LoRADense on a quantised base: x, A and B get their
    float64 gradients (a regression: the no-LoRA and LoRA variants were two Custom primitives on one kernel, and
    GRAPH mode ran one bprop for both: the LoRA layer got dB = 0)."""
    q = quantize(np.random.default_rng(6).standard_normal((K, K)).astype(np.float32) * 0.2, fmt)
    plain = QuantizedDense.from_quantized(q, bias=np.linspace(-0.1, 0.1, K).astype(np.float32), backend=backend)
    lora = LoRADense(K, K, R, 8, 0.0, has_bias=False, compute_dtype=ms.float32, backend=backend,
                     base=QuantizedDense.from_quantized(q, backend=backend))
    rng = np.random.default_rng(7)
    lora.mindpet_delta_lora_b.set_data(Tensor(rng.standard_normal((K, R)).astype(np.float32) * 0.1))
    x = rng.standard_normal((3, K)).astype(np.float32)
    grad = ms.grad(_Stack(plain, lora), grad_position=0, weights=[lora.mindpet_delta_lora_a, lora.mindpet_delta_lora_b])
    dx, (da, db) = grad(Tensor(x))
    w = layer_dequantized(plain)
    a = lora.mindpet_delta_lora_a.asnumpy().astype(np.float64)
    b = lora.mindpet_delta_lora_b.asnumpy().astype(np.float64)
    s = lora.scaling
    h = x.astype(np.float64) @ w.T + np.linspace(-0.1, 0.1, K).astype(np.float32)
    y = h @ w.T + s * (h @ a.T) @ b.T
    dy = 2 * y
    _close(db.asnumpy(), s * dy.T @ (h @ a.T), 1e-5, "dB")
    _close(da.asnumpy(), s * (dy @ b).T @ h, 1e-5, "dA")
    _close(dx.asnumpy(), (dy @ w + s * (dy @ b) @ a) @ w, 1e-5, "dx")
