"""A model on a quantised base: quantize_dense by pattern, inject LoRA on top, training, the delta checkpoint
round trip, the merge policy, and the errors (each naming its argument, raised before anything changes)."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

import mindpet
from mindpet.delta.lora import LoRADense
from mindpet.graph import TrainableParamsCheckPoint, freeze_delta  # noqa: F401  (the checkpoint callback's import)
from mindpet.quant import QuantizedDense, merge_cost, quantize_dense

from quant_testing import ToyModel, layer_dequantized, MSELossOf


def _quantized_toy(fmt="nf4", seed=0, lora=True):
    ms.set_seed(seed)
    net = ToyModel()
    paths = quantize_dense(net, ["encoder", "head"], fmt)
    assert paths == ["encoder", "head"]
    if lora:
        mindpet.inject(net, "lora", ["encoder", "head"], lora_rank=4, lora_alpha=8)
    return net


def test_quantize_dense_by_pattern_keeps_names_and_outputs_close():
    net = ToyModel()
    x = Tensor(np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32))
    before = net(x).asnumpy()
    norm_gamma = net.norm.gamma
    assert quantize_dense(net, ["*"], "int8", exclude_cells=["head"]) == ["encoder"]
    assert isinstance(net.encoder, QuantizedDense) and isinstance(net.head, nn.Dense)
    assert net.norm.gamma is norm_gamma
    names = [n for n, _ in net.parameters_and_names()]
    assert names[:3] == ["encoder.weight_codes", "encoder.weight_scales", "encoder.bias"]
    assert [p.name for p in net.encoder.get_parameters()] == names[:3]
    np.testing.assert_allclose(net(x).asnumpy(), before, atol=0.05)


def test_quantize_dense_errors_before_any_change():
    net = ToyModel(d_in=48)  # 48 is not a multiple of nf4's 64
    with pytest.raises(ValueError, match=r"'in_channels' \(48\) must be a multiple of the group size 64.*'encoder'"):
        quantize_dense(net, ["encoder", "head"], "nf4")
    assert isinstance(net.encoder, nn.Dense) and isinstance(net.head, nn.Dense)  # nothing changed
    with pytest.raises(ValueError, match="'format' must be one of"):
        quantize_dense(net, ["head"], "q2_k")
    with pytest.raises(TypeError, match="'format' must be a str"):
        quantize_dense(net, ["head"], None)
    with pytest.raises(ValueError, match="target_cells pattern 'norm' selects no Linear-like cell"):
        quantize_dense(net, ["head", "norm"], "int8")
    with pytest.raises(TypeError, match="'net' must be a mindspore.nn.Cell"):
        quantize_dense([net], ["head"], "int8")
    with pytest.raises(ValueError, match="exclude_cells pattern 'nope' matches none"):
        quantize_dense(net, ["head"], "int8", exclude_cells=["nope"])
    assert isinstance(net.head, nn.Dense)
    quantize_dense(net, ["head"], "int8")
    with pytest.raises(ValueError, match="already quantised"):
        quantize_dense(net, ["head"], "int8")
    mindpet.inject(net, "lora", ["encoder"], lora_rank=2, lora_alpha=2)
    with pytest.raises(ValueError, match="already are delta layers"):
        quantize_dense(net, ["encoder"], "int8")


def test_inject_on_a_quantized_model():
    net = _quantized_toy("q4_1", lora=False)
    x = Tensor(np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32))
    before = net(x).asnumpy()
    codes = net.encoder.weight_codes
    assert mindpet.inject(net, "lora", ["encoder", "head"], lora_rank=4, lora_alpha=8) == ["encoder", "head"]
    assert isinstance(net.encoder, LoRADense) and net.encoder.quantized_base
    assert net.encoder.weight_codes is codes and codes.name == "encoder.weight_codes"
    assert net.encoder.activation is not None  # the relu carried over
    np.testing.assert_array_equal(net(x).asnumpy(), before)  # B = 0 at injection
    names = sorted(n for n, _ in net.parameters_and_names() if "lora" in n)
    assert names == ["encoder.mindpet_delta_lora_a", "encoder.mindpet_delta_lora_b",
                     "head.mindpet_delta_lora_a", "head.mindpet_delta_lora_b"]


def test_lora_on_quantized_base_trains_and_delta_round_trips(tmp_path):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    target = np.tanh(x[:, :4] * 1.5).astype(np.float32)  # a regression the frozen random base cannot fit
    net = _quantized_toy("nf4")
    result = freeze_delta(net, "lora")
    assert all("mindpet_delta_lora" in n for n in result.trainable) and len(result.trainable) == 4
    step = nn.TrainOneStepCell(MSELossOf(net), nn.Adam(net.trainable_params(), learning_rate=0.01))
    step.set_train()
    codes_before = net.encoder.weight_codes.asnumpy().copy()
    losses = [float(step(Tensor(x), Tensor(target)).asnumpy()) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses
    np.testing.assert_array_equal(net.encoder.weight_codes.asnumpy(), codes_before)

    net.set_train(False)
    out = net(Tensor(x)).asnumpy()
    mindpet.save_delta(net, tmp_path / "delta")
    from safetensors.numpy import load_file
    keys = sorted(load_file(str(tmp_path / "delta" / "delta.safetensors")))
    assert keys == ["encoder.mindpet_delta_lora_a", "encoder.mindpet_delta_lora_b",
                    "head.mindpet_delta_lora_a", "head.mindpet_delta_lora_b"]  # no base

    fresh = _quantized_toy("nf4")  # the same seed: the same float init, the same quantised base
    report = mindpet.load_delta(fresh, tmp_path / "delta")
    assert len(report.loaded_keys) == 4 and not report.missing_keys
    fresh.set_train(False)
    np.testing.assert_array_equal(fresh(Tensor(x)).asnumpy(), out)


def test_trainable_params_checkpoint_holds_no_base(tmp_path):
    net = _quantized_toy("q4_0")
    freeze_delta(net, "lora")
    chosen = TrainableParamsCheckPoint(str(tmp_path / "ckpt")).select_parameters(net)
    assert sorted(p.name for p in chosen) == ["encoder.mindpet_delta_lora_a", "encoder.mindpet_delta_lora_b",
                                              "head.mindpet_delta_lora_a", "head.mindpet_delta_lora_b"]


def _trained(fmt):
    net = _quantized_toy(fmt)
    rng = np.random.default_rng(3)
    for layer in (net.encoder, net.head):
        layer.mindpet_delta_lora_b.set_data(Tensor(rng.standard_normal(layer.mindpet_delta_lora_b.shape)
                                                   .astype(np.float32) * 0.05))
    return net


def test_merge_into_a_quantized_base_is_refused_before_any_change():
    net = _trained("q4_0")
    with pytest.raises(ValueError, match=r"For 'merge_lora', the LoRADense at 'encoder' runs on a quantised base "
                                         r"\(q4_0\).*merge_and_unload\(model, dequantize=True\)"):
        mindpet.merge_lora(net)
    with pytest.raises(ValueError, match="For 'merge_and_unload', the LoRADense at 'encoder'"):
        mindpet.merge_and_unload(net)
    with pytest.raises(TypeError, match="'dequantize' must be a bool"):
        mindpet.merge_and_unload(net, dequantize=1)
    assert isinstance(net.encoder, LoRADense) and not net.encoder.merged


def test_merge_and_unload_to_a_float_base():
    net = _trained("q4_1")
    x = Tensor(np.random.default_rng(4).standard_normal((6, 64)).astype(np.float32))
    layer = net.encoder
    w = layer_dequantized(layer)
    a = layer.mindpet_delta_lora_a.asnumpy().astype(np.float64)
    b = layer.mindpet_delta_lora_b.asnumpy().astype(np.float64)
    expected_w = w + layer.scaling * b @ a
    cost = merge_cost(layer)
    # requantising W + sBA would lose a large part of the update (the quantisation step is of its size)
    assert cost["update_rms"] > 0 and cost["lost_fraction"] > 0.2 and cost["requantization_rms"] > 0
    before = net(x).asnumpy()
    mindpet.merge_and_unload(net, dequantize=True)
    assert type(net.encoder) is nn.Dense and type(net.head) is nn.Dense
    assert net.encoder.weight.dtype == ms.float32 and net.encoder.weight.name == "encoder.weight"
    np.testing.assert_allclose(net.encoder.weight.asnumpy(), expected_w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-5, atol=1e-5)
    assert not any("lora" in n or "codes" in n for n, _ in net.parameters_and_names())


def test_quantized_base_save_load_round_trip(tmp_path):
    from mindpet.quant import load_quantized, load_quantized_into, quantized_tensors, save_quantized
    net = _trained("q4_1")
    net.norm.gamma.set_data(Tensor(np.linspace(0.5, 1.5, 64).astype(np.float32)))
    path = save_quantized(quantized_tensors(net), tmp_path / "base.safetensors")
    stored = load_quantized(path)
    assert sorted(stored) == ["encoder.bias", "encoder.weight", "head.bias", "head.weight", "norm.beta",
                              "norm.gamma"]  # no delta parameter
    assert stored["encoder.weight"].format == "q4_1"

    fresh = _quantized_toy("q4_1", seed=7)  # another init: other codes, other norm
    for layer, other in ((net.encoder, fresh.encoder), (net.head, fresh.head)):
        other.mindpet_delta_lora_a.set_data(layer.mindpet_delta_lora_a)
        other.mindpet_delta_lora_b.set_data(layer.mindpet_delta_lora_b)
    assert not np.array_equal(fresh.encoder.weight_codes.asnumpy(), net.encoder.weight_codes.asnumpy())
    report = load_quantized_into(fresh, stored)
    assert sorted(report.loaded_keys) == sorted(stored) and not report.missing_keys
    for name, param in net.parameters_and_names():
        np.testing.assert_array_equal(dict(fresh.parameters_and_names())[name].asnumpy(), param.asnumpy(), name)
    x = Tensor(np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32))
    np.testing.assert_array_equal(fresh(x).asnumpy(), net(x).asnumpy())

    with pytest.raises(ValueError, match="'encoder.weight' is a q8_0 weight"):
        load_quantized_into(_quantized_toy("q8_0"), stored)
    with pytest.raises(ValueError, match="do not match the model: missing"):
        load_quantized_into(fresh, {k: v for k, v in stored.items() if k != "norm.beta"})
    single = QuantizedDense.from_dense(nn.Dense(64, 8), "nf4")
    save_quantized(single, tmp_path / "one.safetensors")  # the storage hook of one layer
    assert sorted(load_quantized(tmp_path / "one.safetensors")) == ["bias", "weight"]
