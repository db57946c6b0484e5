"""mindpet.inject: delta layers by path pattern on a BERT-style model and an MLP (values vs float64 numpy)."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

import mindpet
from mindpet.delta import AdapterDense, LoRADense, LowRankAdapterDense
from mindpet.graph import freeze_delta

from integration_models import MLP, bert_inputs, f64, mlp_reference, randomize, tiny_bert

QV = ["bert.layers.0.attention.query", "bert.layers.0.attention.value",
      "bert.layers.1.attention.query", "bert.layers.1.attention.value"]
QV1 = QV[:2]


def _names(net):
    return [(n, p.name) for n, p in net.parameters_and_names()]


def _params64(net):
    return {n: f64(p) for n, p in net.parameters_and_names()}


# ----------------------------------------------------------------------------- BERT, both modes
def test_lora_on_bert_keeps_outputs_names_and_trains_only_the_delta(mode):
    net = tiny_bert(layers=1)
    inputs = bert_inputs()
    before = net(*inputs).asnumpy()  # GRAPH: compiled before the injection
    base_names = _names(net)

    paths = mindpet.inject(net, "lora", ["*attention.query", "*attention.value"], lora_rank=2, lora_alpha=4)

    assert paths == QV1
    assert all(isinstance(dict(net.cells_and_names())[p], LoRADense) for p in paths)
    np.testing.assert_allclose(net(*inputs).asnumpy(), before, rtol=0, atol=1e-6)
    names = _names(net)
    assert all(n == pname for n, pname in names)  # Parameter.name follows the path (checkpoints)
    assert [x for x in names if "mindpet_delta_" not in x[0]] == base_names
    assert sorted(n for n, _ in names if "mindpet_delta_" in n) == sorted(
        f"{p}.mindpet_delta_lora_{ab}" for p in QV1 for ab in "ab")

    freeze_delta(net, "lora", exclude=["*head*"])
    trainable = sorted(p.name for p in net.trainable_params())
    assert trainable == sorted([f"{p}.mindpet_delta_lora_{ab}" for p in QV1 for ab in "ab"]
                               + ["head.weight", "head.bias"])

    # One SGD step through the injected layers: only the delta and the head move.
    start = _params64(net)
    step = nn.TrainOneStepCell(_Loss(net), nn.SGD(net.trainable_params(), learning_rate=0.5))
    step.set_train(True)
    step(*inputs, Tensor(np.array([0, 2], np.int32)))
    moved = sorted(n for n, v in _params64(net).items() if not np.array_equal(v, start[n]))
    assert "head.weight" in moved and all(f"{p}.mindpet_delta_lora_a" not in moved for p in QV1)  # B was 0
    assert set(moved) <= set(trainable) and any("lora_b" in n for n in moved)


class _Loss(nn.Cell):
    """Cross-entropy of the classifier's logits: (ids, mask, types, label) -> scalar."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, ids, mask, types, label):
        return self.loss(self.net(ids, mask, types), label)


def test_inject_values_match_numpy_after_graph_was_compiled(mode):
    """Injected layers compute x W^T + b + s x A^T B^T with the pre-trained W, b and activation."""
    net = MLP()
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    base = _params64(net)
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), mlp_reference(x, base), rtol=1e-5, atol=1e-6)

    assert mindpet.inject(net, "lora", ["fc1", "blocks.*"], lora_rank=2, lora_alpha=3.0) == ["blocks.0", "fc1"]
    randomize(net, "lora_b")
    p = _params64(net)
    lora = {k: (1.5, p[k + ".mindpet_delta_lora_a"], p[k + ".mindpet_delta_lora_b"]) for k in ("fc1", "blocks.0")}
    np.testing.assert_allclose(net(Tensor(x)).asnumpy(), mlp_reference(x, base, lora), rtol=1e-5, atol=1e-5)
    assert net.blocks[0].has_bias is False and net.fc1.activation_flag


def test_adapters_on_bert_keep_outputs_and_are_wired_in(pynative):
    net = tiny_bert()
    inputs = bert_inputs()
    before = net(*inputs).asnumpy()
    assert mindpet.inject(net, "adapter", "*ffn.output", bottleneck_size=4) == [
        "bert.layers.0.ffn.output", "bert.layers.1.ffn.output"]
    assert mindpet.inject(net, "low_rank_adapter", "re:bert\\.layers\\.\\d+\\.attention\\.output",
                          reduction_factor=2, low_rank_size=1) == [
        "bert.layers.0.attention.output", "bert.layers.1.attention.output"]
    cells = dict(net.cells_and_names())
    assert isinstance(cells["bert.layers.0.ffn.output"], AdapterDense)
    assert isinstance(cells["bert.layers.1.attention.output"], LowRankAdapterDense)
    assert cells["bert.layers.1.attention.output"].compute_dtype == ms.float32
    np.testing.assert_allclose(net(*inputs).asnumpy(), before, rtol=0, atol=1e-6)
    assert "bert.layers.0.ffn.output.adapter.mindpet_delta_adapter_up_weight" in dict(net.parameters_and_names())
    assert freeze_delta(net, "adapter").frozen and freeze_delta(net, "low_rank_adapter").frozen
    randomize(net, "mindpet_delta_adapter_up")
    assert np.abs(net(*inputs).asnumpy() - before).max() > 1e-3


# ----------------------------------------------------------------------------- selection rules
def test_dry_run_returns_the_paths_and_changes_nothing(pynative):
    net = tiny_bert()
    names, cells = _names(net), [type(c) for _, c in net.cells_and_names()]
    planned = mindpet.inject(net, "lora", ["re:.*\\.(query|value)"], dry_run=True, lora_rank=2, lora_alpha=4)
    assert planned == QV
    assert _names(net) == names and [type(c) for _, c in net.cells_and_names()] == cells
    assert mindpet.inject(net, "lora", ["re:.*\\.(query|value)"], lora_rank=2, lora_alpha=4) == planned


def test_patterns_exclude_sorted_and_skip_non_dense_matches(pynative):
    net = tiny_bert()
    # '*attention*' also matches the attention containers and LayerNorms: only the Dense are taken.
    paths = mindpet.inject(net, "lora", ["*layers.1.attention*", "*layers.0.attention.key"],
                           exclude_modules=["*.output", "re:.*1\\.attention\\.key"], lora_rank=1, lora_alpha=1)
    assert paths == ["bert.layers.0.attention.key", "bert.layers.1.attention.query", "bert.layers.1.attention.value"]
    assert isinstance(net.bert.layers[0].attention.query, nn.Dense)


@pytest.mark.parametrize("args, kwargs, error, words", [
    (("lora", ["*query", "*Qry*"]), {"lora_rank": 2, "lora_alpha": 4}, ValueError, ["'*Qry*'", "selects no Linear-like cell"]),
    (("lora", ["*Query"]), {"lora_rank": 2, "lora_alpha": 4}, ValueError, ["'*Query'"]),
    (("LoRA", ["*query"]), {}, ValueError, ["'method'", "'lora'", "'adapter'", "'low_rank_adapter'"]),
    (("lora", ["*attention"]), {"lora_rank": 2, "lora_alpha": 4}, ValueError, ["not Linear-like", "BertAttention"]),
    (("lora", ["*query"]), {"exclude_modules": ["*nope*"], "lora_rank": 2, "lora_alpha": 4}, ValueError,
     ["exclude_modules", "'*nope*'"]),
    (("lora", ["*query"]), {"exclude_modules": "*", "lora_rank": 2, "lora_alpha": 4}, ValueError,
     ["removes every layer"]),
    (("lora", ["re:(unclosed"]), {"lora_rank": 2, "lora_alpha": 4}, ValueError, ["not a valid regular expression"]),
    (("lora", []), {"lora_rank": 2, "lora_alpha": 4}, TypeError, ["'target_modules'"]),
    (("lora", ["*query", 3]), {"lora_rank": 2, "lora_alpha": 4}, TypeError, ["target_modules[1]"]),
    (("lora", ["*query"]), {"lora_rank": 2}, TypeError, ["lora_alpha"]),
    (("lora", ["*query"]), {"lora_rank": 2, "lora_alpha": 4, "r": 8}, TypeError, ["['r']", "allowed"]),
    (("lora", ["*query"]), {"lora_rank": 2, "lora_alpha": 4, "has_bias": False}, TypeError, ["has_bias"]),
    (("lora", ["*query"]), {"lora_rank": 2, "lora_alpha": 4, "dry_run": 1}, TypeError, ["'dry_run'"]),
    (("lora", ["*query"]), {"lora_rank": 0, "lora_alpha": 4}, ValueError, ["lora_rank"]),
    (("adapter", ["*query"]), {"bottleneck_size": "4"}, TypeError, ["bottleneck_size"]),
])
def test_bad_arguments_raise_before_any_change(pynative, args, kwargs, error, words):
    net = tiny_bert()
    names = _names(net)
    with pytest.raises(error) as info:
        mindpet.inject(net, *args, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert _names(net) == names
    assert not any(isinstance(c, (LoRADense, AdapterDense)) for _, c in net.cells_and_names())


def test_already_injected_layers_are_an_error_unless_excluded(pynative):
    net = tiny_bert()
    mindpet.inject(net, "lora", "*attention.query", lora_rank=2, lora_alpha=4)
    with pytest.raises(ValueError, match="already are delta layers.*bert.layers.0.attention.query"):
        mindpet.inject(net, "lora", ["*attention.*"], lora_rank=2, lora_alpha=4)
    assert mindpet.inject(net, "adapter", ["*attention.*"], exclude_modules="*query", dry_run=True) == [
        f"bert.layers.{i}.attention.{m}" for i in range(2) for m in ("key", "output", "value")]
    with pytest.raises(TypeError, match="'model'"):
        mindpet.inject(object(), "lora", ["*"])


def test_shared_dense_is_refused(pynative):
    class Tied(nn.Cell):
        def __init__(self):
            super().__init__()
            self.a = nn.Dense(3, 3)
            self.b = self.a

        def construct(self, x):
            return self.b(self.a(x))

    with pytest.raises(ValueError, match="shared by several paths"):
        mindpet.inject(Tied(), "lora", "a", lora_rank=1, lora_alpha=1)


# ----------------------------------------------------------------------------- parameters and dtypes
def test_pretrained_parameters_are_taken_over_and_checkpoints_still_load(pynative, tmp_path):
    net = MLP()
    net.fc1.weight.requires_grad = False
    weight = net.fc1.weight
    ckpt = str(tmp_path / "base.ckpt")
    ms.save_checkpoint(net, ckpt)
    mindpet.inject(net, "lora", ["fc1", "head"], lora_rank=2, lora_alpha=2)
    assert net.fc1.weight is weight and weight.requires_grad is False and weight.name == "fc1.weight"
    assert net.fc1.compute_dtype == ms.float32 and net.fc1.param_init_type == ms.float32
    not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(ckpt))
    assert sorted(not_loaded) == sorted(f"{p}.mindpet_delta_lora_{ab}" for p in ("fc1", "head") for ab in "ab")


@pytest.mark.parametrize("backend", ["composed", "auto"])
def test_compute_dtype_follows_the_dense_weight(pynative, backend, monkeypatch):
    monkeypatch.setenv("MINDPET_KERNEL_BACKEND", backend)
    net = MLP(dtype=ms.float16)
    x = Tensor(np.random.default_rng(2).standard_normal((2, 6)).astype(np.float16))
    before = net(x).asnumpy()
    mindpet.inject(net, "lora", "fc1", lora_rank=2, lora_alpha=2)
    assert net.fc1.compute_dtype == ms.float16 and net.fc1.mindpet_delta_lora_a.dtype == ms.float16
    after = net(x).asnumpy()
    if net.fc1.backend == "composed":  # float16 primitives as nn.Dense's: bit for bit
        np.testing.assert_array_equal(after, before)
    else:  # the fused op rounds x W^T + b once where nn.Dense rounds twice: within float16 rounding
        assert net.fc1.backend == "cpu"
        np.testing.assert_allclose(after.astype(np.float32), before.astype(np.float32), rtol=2e-3, atol=2e-3)

    net32 = MLP()
    mindpet.inject(net32, "lora", "fc1", lora_rank=2, lora_alpha=2, param_init_type=ms.float16,
                   compute_dtype=ms.float16)
    assert net32.fc1.weight.dtype == ms.float16 and net32.fc1.weight.name == "fc1.weight"
    assert net32.fc1.compute_dtype == ms.float16


def test_injected_layers_follow_the_training_mode_of_the_model(pynative):
    net = MLP()
    net.set_train(True)
    mindpet.inject(net, "lora", "fc1", lora_rank=2, lora_alpha=2, lora_dropout=0.5)
    mindpet.inject(net, "adapter", "head", bottleneck_size=2)
    assert net.fc1.training and net.head.training and net.head.adapter.training
    net.set_train(False)
    mindpet.inject(net, "lora", "blocks.0", lora_rank=2, lora_alpha=2)
    assert not net.blocks[0].training
