"""AdapterDense and LowRankAdapterDense on a quantised base: the same outputs and gradients as the layer on a float
base holding the float64-dequantised weight (GRAPH and PYNATIVE, composed and fused), the base's Parameters taken
over and never trainable, inject/freeze/train/save_delta on a quantised model, and the errors."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

import mindpet
from mindpet.delta.adapter import AdapterDense
from mindpet.delta.low_rank_adapter import LowRankAdapterDense
from mindpet.graph import freeze_delta
from mindpet.quant import QuantizedDense, quantize, quantize_dense, quantized_tensors

from quant_testing import BACKENDS, ToyModel, dequantize_f64, Weighted, MSELossOf

K, N = 64, 32


def _pair(cls, fmt, backend, **kwargs):
    """(layer on a quantised base, the same layer on a float base holding deq(W_q), the base QuantizedDense)."""
    rng = np.random.default_rng(0)
    q = quantize((rng.standard_normal((N, K)) * 0.2).astype(np.float32), fmt)
    bias = (rng.standard_normal(N) * 0.1).astype(np.float32)
    base = QuantizedDense.from_quantized(q, bias=bias, activation="relu")
    args = dict(has_bias=True, activation="relu", compute_dtype=ms.float32, backend=backend, **kwargs)
    on_quant = cls(K, N, base=base, **args)
    on_float = cls(K, N, weight_init=Tensor(dequantize_f64(q.codes, q.scales, q.offsets, fmt).astype(np.float32)),
                   bias_init=Tensor(bias), **args)
    floats = dict(on_float.parameters_and_names())
    for name, p in on_quant.parameters_and_names():
        if "mindpet_delta" in name:  # the same delta, non-zero (the up projections start at zero)
            value = (rng.standard_normal(p.shape) * 0.1).astype(np.float32)
            p.set_data(Tensor(value))
            floats[name].set_data(Tensor(value))
    on_float.weight.requires_grad = False
    on_float.bias.requires_grad = False
    return on_quant, on_float, base


def _grads(layer, x, cot):
    params = [p for p in layer.trainable_params() if "mindpet_delta" in p.name]
    dx, dps = ms.grad(Weighted(layer, cot), grad_position=0, weights=params)(Tensor(x))
    return [dx.asnumpy()] + [d.asnumpy() for d in dps]


CASES = [(AdapterDense, dict(bottleneck_size=8, non_linearity="relu")),
         (LowRankAdapterDense, dict(reduction_factor=4, low_rank_size=2, non_linearity="relu"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["q4_1", "nf4", "q8_0"])
@pytest.mark.parametrize("cls, kwargs", CASES, ids=["adapter", "low_rank_adapter"])
def test_adapter_on_a_quantized_base_matches_the_float_base(mode, cls, kwargs, fmt, backend):
    on_quant, on_float, base = _pair(cls, fmt, backend, **kwargs)
    assert on_quant.weight is None and on_quant.weight_codes is base.weight_codes and on_quant.bias is base.bias
    assert not any(p.requires_grad for p in base.get_parameters())
    assert sorted(p.name for p in on_quant.trainable_params()) == sorted(
        p.name for p in on_float.trainable_params() if "mindpet_delta" in p.name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, K)).astype(np.float32)
    cot = rng.standard_normal((2, 3, N)).astype(np.float32)
    want = on_float(Tensor(x)).asnumpy()
    np.testing.assert_allclose(on_quant(Tensor(x)).asnumpy(), want, rtol=1e-5, atol=1e-5)
    for got, ref in zip(_grads(on_quant, x, cot), _grads(on_float, x, cot)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_adapter_on_a_quantized_base_errors_name_the_argument():
    q = quantize(np.ones((N, K), np.float32), "q8_0")
    base = QuantizedDense.from_quantized(q, bias=np.zeros(N, np.float32))
    with pytest.raises(TypeError, match="'base' must be a mindpet.quant.QuantizedDense"):
        AdapterDense(K, N, base=nn.Dense(K, N))
    with pytest.raises(ValueError, match="'in_channels' \\(32\\) must equal the base's \\(64\\)"):
        LowRankAdapterDense(32, N, base=base)
    with pytest.raises(ValueError, match="'transpose_b' must be True"):
        AdapterDense(K, N, transpose_b=False, base=base)
    layer = AdapterDense(K, N, base=base, bottleneck_size=4)
    with pytest.raises(ValueError, match="not supported on a quantised base"):
        layer.shard(strategy_matmul_org=((1, 1), (1, 1)))


@pytest.mark.parametrize("method, kwargs", [("adapter", dict(bottleneck_size=8)),
                                            ("low_rank_adapter", dict(reduction_factor=4))])
def test_inject_an_adapter_on_a_quantized_model_trains_and_saves_only_the_delta(tmp_path, method, kwargs):
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    net = ToyModel()
    quantize_dense(net, ["encoder"], "q4_0")
    codes = net.encoder.weight_codes
    assert mindpet.inject(net, method, ["encoder"], **kwargs) == ["encoder"]
    assert net.encoder.quantized_base and net.encoder.weight_codes is codes and codes.name == "encoder.weight_codes"
    assert set(quantized_tensors(net)) >= {"encoder.weight", "encoder.bias", "head.weight"}
    result = freeze_delta(net, method)
    assert result.trainable and all("mindpet_delta" in n for n in result.trainable)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    target = np.tanh(x[:, :4] * 1.5).astype(np.float32)
    step = nn.TrainOneStepCell(MSELossOf(net), nn.Adam(net.trainable_params(), learning_rate=0.03))
    step.set_train()
    before = codes.asnumpy().copy()
    losses = [float(step(Tensor(x), Tensor(target)).asnumpy()) for _ in range(40)]
    assert losses[-1] < 0.7 * losses[0], losses
    np.testing.assert_array_equal(codes.asnumpy(), before)
    mindpet.save_delta(net, tmp_path / "delta")
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    keys = sorted(load_file(str(tmp_path / "delta" / "delta.safetensors")))
    assert keys and all("mindpet_delta" in k for k in keys), keys
