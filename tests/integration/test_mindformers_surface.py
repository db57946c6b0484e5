"""mindpet as the ``mindpet`` package mindformers 2.0/2.1 imports (PyPI pin ``mindpet==1.0.4``).

1. Every ``mindpet.*`` import in mindformers' sources resolves, with the call forms mindformers uses.
2. The LoRA flow of mindformers' ``get_pet_model`` on a stand-in of its ``Linear`` layer
   (``mindformers_standin``): matched cells become our ``LoRADense`` that takes over the pre-trained
   weight, outputs are unchanged, ``freeze_delta`` leaves only LoRA trainable, training lowers the loss,
   and ``merge_lora`` / ``save_delta`` / ``load_delta`` work on the result.
3. With mindformers importable (not installable from PyPI on the CI machine), the same through
   mindformers' own code; skipped otherwise, with the reason.
"""
import importlib
import importlib.util

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet import load_delta, merge_lora, save_delta, unmerge_lora
from mindpet.delta.lora import LoRADense
from mindpet.graph.freeze_utils import freeze_delta, freeze_modules

from mindformers_standin import PetType, StandInLinear, replace_with_lora

# Every mindpet import of mindformers 2.0.0 and 2.1.0 (identical), plus `from mindpet.graph import
# freeze_delta` of mindformers r1.0: (module, name, the file that imports it).
MINDFORMERS_IMPORTS = [
    ("mindpet.delta.lora", "LoRADense", "mindformers/pet/tuners/lora_adapter.py"),
    ("mindpet.graph.freeze_utils", "freeze_delta", "mindformers/pet/tuners/pet_adapter.py"),
    ("mindpet.graph.freeze_utils", "freeze_modules", "mindformers/pet/tuners/pet_adapter.py"),
    ("mindpet.delta.ptuning2", "PrefixEncoder", "mindformers/models/glm2/glm2.py"),
    ("mindpet.utils.version_control", "get_dropout",
     "mindformers/pet/tuners/ptuning2_adapter.py, prefix_tuning_adapter.py"),
    ("mindpet.graph", "freeze_delta", "mindformers r1.0 (older releases)"),
]


@pytest.mark.parametrize("module, name, where", MINDFORMERS_IMPORTS, ids=[f"{m}.{n}" for m, n, _ in MINDFORMERS_IMPORTS])
def test_every_mindformers_import_resolves(module, name, where):
    obj = getattr(importlib.import_module(module), name)
    assert callable(obj), f"{module}.{name} (imported by {where}) is not callable"


def test_call_forms_mindformers_uses():
    """The positional forms of pet_adapter.py and glm2.py (PrefixEncoder with 7 positional arguments)."""
    from mindpet.delta.ptuning2 import PrefixEncoder
    from mindpet.utils.version_control import get_dropout

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Dense(4, 4)
            self.prefix_encoder = PrefixEncoder(4, 2, 2, 8, False, 128, 0.01)  # ChatGLM2WithPtuning2
            self.dropout = get_dropout(0.01)

    net = Net()
    freeze_delta(net, PetType.P_TUNING_V2)                      # PetAdapter.freeze_pretrained_model(self, pet_type)
    assert [p.name for p in net.trainable_params()] == ["prefix_encoder.mindpet_delta_ptuning2_embedding.embedding_table"]
    freeze_delta(net, PetType.P_TUNING_V2, None, ["backbone.bias"])  # (model, pet_type, include, exclude)
    assert "backbone.bias" in [p.name for p in net.trainable_params()]
    freeze_modules(net, ["*"], ["*prefix_encoder*"])            # freeze_mcore_pretrained_model positional form
    assert len(net.trainable_params()) == 1
    kv = net.prefix_encoder(3)                                  # construct(batch_size), dtype float16
    assert len(kv) == 2 and kv[0].shape == (2, 3, 2, 4, 8) and kv[0].dtype == ms.float16


# ----------------------------------------------------------------------------- the get_pet_model LoRA flow
HIDDEN, FFN, SEQ, BATCH = 16, 24, 5, 2


class _Attention(nn.Cell):
    def __init__(self, compute_dtype):
        super().__init__()
        lin = dict(has_bias=False, compute_dtype=compute_dtype)
        self.wq, self.wk = StandInLinear(HIDDEN, HIDDEN, **lin), StandInLinear(HIDDEN, HIDDEN, **lin)
        self.wv, self.wo = StandInLinear(HIDDEN, HIDDEN, **lin), StandInLinear(HIDDEN, HIDDEN, **lin)

    def construct(self, x):
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        weights = ops.softmax(q @ k.swapaxes(-1, -2) / 4.0, -1)
        return self.wo(weights @ v)


class _Block(nn.Cell):
    def __init__(self, compute_dtype):
        super().__init__()
        self.attention = _Attention(compute_dtype)
        self.w1 = StandInLinear(HIDDEN, FFN, activation=nn.GELU, compute_dtype=compute_dtype)
        self.w2 = StandInLinear(FFN, HIDDEN, compute_dtype=compute_dtype)

    def construct(self, x):
        x = x + self.attention(x)
        return x + self.w2(self.w1(x))


class _Model(nn.Cell):
    """A two-block toy LLM body built from mindformers-style Linear layers."""

    def __init__(self, compute_dtype=ms.float32):
        super().__init__()
        self.layers = nn.CellList([_Block(compute_dtype) for _ in range(2)])
        self.head = nn.Dense(HIDDEN, 3)

    def construct(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _build(compute_dtype=ms.float32):
    ms.set_seed(1)
    model = _Model(compute_dtype)
    for _, param in model.parameters_and_names():  # pre-trained-like weights, large enough to matter
        param.set_data(Tensor(np.random.randn(*param.shape).astype(np.float32) * 0.3))
    return model


TARGETS = ".*wq|.*wv|.*w1"  # LoraConfig(target_modules=...): re.match on the child's attribute name


def _lora_paths(model):
    return [path for path, cell in model.cells_and_names() if isinstance(cell, LoRADense)]


def test_replacement_keeps_weights_names_and_outputs(mode):
    model = _build()
    x = Tensor(np.random.randn(BATCH, SEQ, HIDDEN).astype(np.float32))
    before = model(x).asnumpy()
    pretrained = {name: param for name, param in model.parameters_and_names()}
    replace_with_lora(model, TARGETS, lora_rank=4, lora_alpha=8, lora_dropout=0.0)

    assert _lora_paths(model) == [f"layers.{i}.{p}" for i in range(2) for p in ("attention.wq", "attention.wv", "w1")]
    after_params = dict(model.parameters_and_names())
    for name, param in pretrained.items():  # same names, same Parameter objects (no copy of the weights)
        assert after_params[name] is param, name
        assert param.name == name
    lora_names = sorted(set(after_params) - set(pretrained))
    assert lora_names == sorted(f"layers.{i}.{p}.mindpet_delta_lora_{ab}" for i in range(2)
                                for p in ("attention.wq", "attention.wv", "w1") for ab in "ab")
    assert all(after_params[n].name == n for n in lora_names)  # update_parameters_name
    w1 = model.layers[0].w1
    assert isinstance(w1.activation, nn.GELU) and w1.weight.shape == (FFN, HIDDEN)
    np.testing.assert_allclose(model(x).asnumpy(), before, rtol=1e-5, atol=1e-5)  # lora_b starts at zero


def test_replacement_with_float16_compute(mode):
    """mindformers' default Linear computes in float16: LoRADense inherits the cell's dtypes."""
    model = _build(ms.float16)
    x = Tensor(np.random.randn(BATCH, SEQ, HIDDEN).astype(np.float32))
    before = model(x).asnumpy()
    replace_with_lora(model, TARGETS, lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    layer = model.layers[1].attention.wq
    assert layer.compute_dtype == ms.float16 and layer.param_init_type == ms.float32
    np.testing.assert_allclose(model(x).asnumpy(), before, rtol=1e-2, atol=1e-2)


def test_exclude_layers_and_non_matching_cells():
    model = _build()
    replace_with_lora(model, TARGETS, exclude_layers=["w1"])
    assert _lora_paths(model) == [f"layers.{i}.attention.{p}" for i in range(2) for p in ("wq", "wv")]


def test_freeze_train_merge_save_load(tmp_path):
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    model = _build()
    replace_with_lora(model, TARGETS, lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    result = freeze_delta(model, PetType.LORA, None, None)  # PetAdapter.freeze_pretrained_model
    trainable = sorted(p.name for p in model.trainable_params())
    assert trainable and all("mindpet_delta_lora_" in n for n in trainable)
    assert len(trainable) == 12 and "head.weight" in result.frozen

    x = Tensor(np.random.randn(8, SEQ, HIDDEN).astype(np.float32))
    labels = Tensor(np.random.randint(0, 3, (8 * SEQ,)).astype(np.int32))
    frozen_before = {n: p.asnumpy().copy() for n, p in model.parameters_and_names() if not p.requires_grad}

    class _Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net, self.ce = net, nn.CrossEntropyLoss()

        def construct(self, x, y):
            return self.ce(self.net(x).reshape(-1, 3), y)

    step = nn.TrainOneStepCell(_Loss(model), nn.Adam(model.trainable_params(), learning_rate=0.02))
    step.set_train()
    losses = [float(step(x, labels).asnumpy()) for _ in range(25)]
    assert losses[-1] < 0.7 * losses[0], losses
    for name, value in frozen_before.items():
        np.testing.assert_array_equal(dict(model.parameters_and_names())[name].asnumpy(), value, err_msg=name)

    model.set_train(False)
    trained = model(x).asnumpy()
    assert len(merge_lora(model)) == 6
    np.testing.assert_allclose(model(x).asnumpy(), trained, rtol=1e-4, atol=1e-4)
    unmerge_lora(model)

    save_delta(model, str(tmp_path / "delta"))
    fresh = _build()
    replace_with_lora(fresh, TARGETS, lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    fresh.set_train(False)
    report = load_delta(fresh, str(tmp_path / "delta"))
    assert len(report.loaded_keys) == 12 and not report.missing_keys
    np.testing.assert_allclose(fresh(x).asnumpy(), trained, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- mindformers itself (optional)
_MINDFORMERS = importlib.util.find_spec("mindformers") is not None
_SKIP = ("mindformers is not importable here: PyPI's mindformers 2.0.0 and 2.1.0 require hyper-parallel (not on "
         "PyPI), 2.1.0 also MindSpore 2.11; install it with --no-deps (README, 'Using mindpet with mindformers')")


@pytest.fixture
def mindformers_pynative(tmp_path, monkeypatch):
    """PYNATIVE on CPU, and mindformers' ./output (logs, adapter_config.json) under tmp_path."""
    monkeypatch.chdir(tmp_path)
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.skipif(not _MINDFORMERS, reason=_SKIP)
def test_real_mindformers_lora_adapter_and_ptuning2(mindformers_pynative):
    """mindformers' LoraAdapter on its own Linear layers, and PetAdapter's freeze, with our LoRADense."""
    from mindformers.modules.layers import Linear
    from mindformers.pet.pet_config import LoraConfig
    from mindformers.pet.tuners.lora_adapter import LoraAdapter
    from mindformers.pet.tuners.pet_adapter import PetAdapter
    from mindformers.models.glm2 import glm2

    assert glm2.PrefixEncoder is importlib.import_module("mindpet.delta.ptuning2").PrefixEncoder

    class Attention(nn.Cell):
        def __init__(self):
            super().__init__()
            self.wq = Linear(HIDDEN, HIDDEN, has_bias=False, compute_dtype=ms.float32)
            self.wk = Linear(HIDDEN, HIDDEN, has_bias=False, compute_dtype=ms.float32)
            self.wv = Linear(HIDDEN, HIDDEN, has_bias=True, compute_dtype=ms.float32)

        def construct(self, x):
            return self.wq(x) + self.wk(x) + self.wv(x)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.attention = Attention()

        def construct(self, x):
            return self.attention(x)

    net = Net()
    x = Tensor(np.random.randn(BATCH, SEQ, HIDDEN).astype(np.float32))
    before = net(x).asnumpy()
    net = LoraAdapter.get_pet_model(net, LoraConfig(lora_rank=4, lora_alpha=8, target_modules=".*wq|.*wv"))
    assert isinstance(net.attention.wq, LoRADense) and isinstance(net.attention.wv, LoRADense)
    assert not isinstance(net.attention.wk, LoRADense)
    PetAdapter.freeze_pretrained_model(net, "lora")
    assert sorted(p.name for p in net.trainable_params()) == sorted(
        f"attention.{c}.mindpet_delta_lora_{ab}" for c in ("wq", "wv") for ab in "ab")
    net.set_train(False)
    np.testing.assert_allclose(net(x).asnumpy(), before, rtol=1e-5, atol=1e-5)



@pytest.mark.skipif(not _MINDFORMERS, reason=_SKIP)
def test_real_mindformers_get_pet_model_llama(mindformers_pynative):
    """mindformers' get_pet_model(LlamaForCausalLM, LoraConfig) builds on our LoRADense and freeze_delta.
    (Its Llama's forward does not run on CPU: MindSpore has no CPU RmsNorm kernel.)"""
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
    from mindformers.pet import LoraConfig, get_pet_model

    cfg = LlamaConfig(num_layers=2, vocab_size=64, hidden_size=32, num_heads=4, seq_length=8, intermediate_size=48,
                      param_init_type="float32", compute_dtype="float32", layernorm_compute_type="float32")
    net = get_pet_model(LlamaForCausalLM(cfg), LoraConfig(lora_rank=4, lora_alpha=8, target_modules=".*wq|.*wv"))
    assert sum(isinstance(c, LoRADense) for _, c in net.cells_and_names()) == 4
    assert sorted(p.name for p in net.trainable_params()) == sorted(
        f"model.layers.{i}.attention.{c}.mindpet_delta_lora_{ab}" for i in range(2) for c in ("wq", "wv")
        for ab in "ab")


@pytest.mark.skipif(not _MINDFORMERS, reason=_SKIP)
def test_real_mindformers_chatglm2_with_ptuning2(mindformers_pynative):
    """ChatGLM2WithPtuning2 builds our ptuning2.PrefixEncoder and freezes all but it with our freeze_delta."""
    from mindformers.models.glm2.glm2 import ChatGLM2WithPtuning2
    from mindformers.models.glm2.glm2_config import ChatGLM2Config
    from mindformers.pet.pet_config import Ptuning2Config
    from mindpet.delta.ptuning2 import PrefixEncoder

    cfg = ChatGLM2Config(num_layers=2, padded_vocab_size=64, hidden_size=32, ffn_hidden_size=48, kv_channels=8,
                         num_attention_heads=4, multi_query_group_num=2, seq_length=8, param_init_type="float32",
                         compute_dtype="float32", layernorm_compute_type="float32")
    cfg.pet_config = Ptuning2Config(pre_seq_len=3, prefix_projection=True, projection_dim=16, dropout_prob=0.0)
    net = ChatGLM2WithPtuning2(cfg)
    assert isinstance(net.prefix_encoder, PrefixEncoder)
    assert [p.name for p in net.trainable_params()] == [
        "prefix_encoder.mindpet_delta_ptuning2_embedding.embedding_table",
        "prefix_encoder.mindpet_delta_ptuning2_dense_in.weight", "prefix_encoder.mindpet_delta_ptuning2_dense_in.bias",
        "prefix_encoder.mindpet_delta_ptuning2_dense_out.weight", "prefix_encoder.mindpet_delta_ptuning2_dense_out.bias"]
    kv = net.prefix_encoder(2)
    assert len(kv) == 2 and kv[0].shape == (2, 2, 2, 3, 8)  # (2, batch, query groups, pre_seq_len, kv_channels)
