"""LoRA merge / unmerge / merge_and_unload: values vs float64 numpy, GRAPH recompilation, idempotence, errors."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

import mindpet
from mindpet.delta import LoRADense

from integration_models import MLP, bert_inputs, f64, mlp_reference, randomize, tiny_bert

CIN, COUT, RANK, ALPHA = 6, 5, 3, 4.5
S = ALPHA / RANK
U = {ms.float32: 2.0 ** -24, ms.float16: 2.0 ** -11}


def _layer(dtype=ms.float32, seed=0, **kw):
    rng = np.random.default_rng(seed)
    t = lambda *shape: Tensor(rng.standard_normal(shape).astype(np.float32))  # noqa: E731
    return LoRADense(CIN, COUT, RANK, ALPHA, 0.0, lora_a_init=t(RANK, CIN), lora_b_init=t(COUT, RANK),
                     weight_init=t(COUT, CIN), bias_init=t(COUT), param_init_type=dtype, compute_dtype=dtype, **kw)


def _ref(x, w, b, a, bb):
    return x.astype(np.float64) @ (w + S * bb @ a).T + b


def test_merge_and_unmerge_values_and_graph_recompilation(mode):
    layer = _layer()
    x = np.random.default_rng(1).standard_normal((4, CIN)).astype(np.float32)
    w, b, a, bb = (f64(p) for p in (layer.weight, layer.bias, layer.mindpet_delta_lora_a, layer.mindpet_delta_lora_b))
    unmerged = layer(Tensor(x)).asnumpy()  # GRAPH: compiled with the branch
    np.testing.assert_allclose(unmerged, _ref(x, w, b, a, bb), rtol=1e-5, atol=1e-5)

    assert layer.merge() is True and layer.merged
    np.testing.assert_allclose(f64(layer.weight), w + S * bb @ a, rtol=0, atol=U[ms.float32] * 8)
    merged = layer(Tensor(x)).asnumpy()
    np.testing.assert_allclose(merged, _ref(x, w, b, a, bb), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-5, atol=1e-5)

    # The branch is really skipped: a new B changes nothing while merged (a stale graph would add s x A^T B^T).
    new_b = np.random.default_rng(2).standard_normal((COUT, RANK)).astype(np.float32)
    layer.mindpet_delta_lora_b.set_data(Tensor(new_b))
    np.testing.assert_array_equal(layer(Tensor(x)).asnumpy(), merged)

    # Unmerge subtracts the update merge added (old B), then the branch runs with the new B.
    assert layer.unmerge() is True and not layer.merged
    restored = f64(layer.weight)
    assert np.all(np.abs(restored - w) <= U[ms.float32] * (np.abs(w + S * bb @ a) + np.abs(w)) + 1e-12)
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), _ref(x, w, b, a, new_b.astype(np.float64)),
                               rtol=1e-5, atol=1e-5)


def test_merging_twice_is_a_no_op_and_unmerge_of_unmerged_too(pynative):
    layer = _layer(dtype=ms.float16)
    w = f64(layer.weight)
    assert layer.unmerge() is False and np.array_equal(f64(layer.weight), w)
    assert layer.merge() is True
    once = f64(layer.weight)
    assert layer.merge() is False and np.array_equal(f64(layer.weight), once)
    assert layer.unmerge() is True and layer.unmerge() is False
    a, bb = f64(layer.mindpet_delta_lora_a), f64(layer.mindpet_delta_lora_b)
    bound = U[ms.float16] * (np.abs(w + S * bb @ a) + np.abs(w)) * 1.01
    assert np.all(np.abs(f64(layer.weight) - w) <= bound)


def test_a_merged_layer_refuses_to_train(mode):
    layer = _layer()
    x = Tensor(np.ones((2, CIN), np.float32))
    layer.merge()
    layer(x)
    layer.set_train(True)
    with pytest.raises(RuntimeError, match="unmerge"):
        layer(x)
    layer.set_train(False)
    layer.unmerge()
    layer.set_train(True)
    assert layer(x).shape == (2, COUT)


def test_merge_lora_on_bert_keeps_outputs(mode):
    net = tiny_bert(layers=1)
    inputs = bert_inputs()
    paths = mindpet.inject(net, "lora", ["*query", "*value"], lora_rank=2, lora_alpha=4)
    randomize(net, "lora_b")
    unmerged = net(*inputs).asnumpy()
    assert mindpet.merge_lora(net) == paths
    assert mindpet.merge_lora(net) == []
    np.testing.assert_allclose(net(*inputs).asnumpy(), unmerged, rtol=1e-4, atol=1e-5)
    randomize(net, "lora_b", seed=9)  # no effect while merged
    np.testing.assert_allclose(net(*inputs).asnumpy(), unmerged, rtol=1e-4, atol=1e-5)
    assert mindpet.unmerge_lora(net) == paths and mindpet.unmerge_lora(net) == []
    assert np.abs(net(*inputs).asnumpy() - unmerged).max() > 1e-4  # the new B is used again


def test_merge_and_unload_gives_plain_dense_with_merged_weights(mode):
    net = MLP()
    x = np.random.default_rng(4).standard_normal((3, 6)).astype(np.float32)
    base = {n: f64(p) for n, p in net.parameters_and_names()}
    base_names = [n for n, _ in net.parameters_and_names()]
    mindpet.inject(net, "lora", ["fc1", "blocks.0"], lora_rank=2, lora_alpha=3.0)
    randomize(net, "mindpet_delta_")
    net.blocks[0].merge()  # a mix of merged and unmerged layers
    p = {n: f64(q) for n, q in net.parameters_and_names()}
    lora = {k: (1.5, p[k + ".mindpet_delta_lora_a"], p[k + ".mindpet_delta_lora_b"]) for k in ("fc1", "blocks.0")}
    expected = mlp_reference(x, base, lora)
    net.fc1.weight.requires_grad = False
    net(Tensor(x))

    assert mindpet.merge_and_unload(net) is net
    assert type(net.fc1) is nn.Dense and type(net.blocks[0]) is nn.Dense and isinstance(net.blocks[1], nn.Tanh)
    assert [n for n, _ in net.parameters_and_names()] == base_names
    assert all(n == q.name for n, q in net.parameters_and_names())
    assert net.fc1.weight.requires_grad is False and net.fc1.activation_flag and not net.blocks[0].has_bias
    np.testing.assert_allclose(f64(net.fc1.weight), base["fc1.weight"] + 1.5 * lora["fc1"][2] @ lora["fc1"][1],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_errors(pynative):
    with pytest.raises(ValueError, match="no LoRADense"):
        mindpet.merge_lora(MLP())
    with pytest.raises(ValueError, match="no LoRADense"):
        mindpet.merge_and_unload(MLP())
    with pytest.raises(TypeError, match="'model'"):
        mindpet.unmerge_lora("net")
    with pytest.raises(ValueError, match="itself a LoRADense"):
        mindpet.merge_and_unload(_layer())


def test_merge_and_unload_keeps_the_training_mode(pynative):
    net = MLP()
    mindpet.inject(net, "lora", "head", lora_rank=2, lora_alpha=2)
    net.set_train(True)
    mindpet.merge_and_unload(net)
    assert type(net.head) is nn.Dense and net.head.training
