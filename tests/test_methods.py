"""The method registry: parameter names map to exactly one method, and every reader uses the registry."""
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindpet import methods
from mindpet.delta import AdapterDense, AdapterLayer, LoRADense, LowRankAdapterDense, LowRankAdapterLayer
from mindpet.delta.registry import injectable_layers, layer_spec
from mindpet.graph import freeze_delta
from mindpet.inject import DELTA_LAYERS, METHODS


@pytest.mark.parametrize("name, method", [
    ("encoder.0.mindpet_delta_lora_a", "lora"),
    ("adapter.mindpet_delta_adapter_down_weight", "adapter"),
    ("low_rank_adapter.mindpet_delta_low_rank_adapter_up_left", "low_rank_adapter"),
    ("prefix.mindpet_delta_prefixtuning_mlp.0.weight", "prefixtuning"),
    ("mindpet_delta_bitfit", "bitfit"),
    ("encoder.0.dense.weight", None),
    ("mindpet_delta_loraxyz", None),          # no '_' after the method: not a LoRA parameter
    ("mindpet_delta_unknown_x", None),
])
def test_method_of_matches_the_longest_registered_method_exactly(name, method):
    assert methods.method_of(name) == method


@pytest.fixture
def lora_plus(monkeypatch):
    """A future method 'lora_plus' registered for the test only."""
    monkeypatch.setattr(methods, "_registered", list(methods.registered_methods()))
    methods.register_method("lora_plus")
    yield "lora_plus"


class _TwoLoras(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mindpet_delta_lora_a = Parameter(Tensor(np.zeros((2, 2), np.float32)), name="mindpet_delta_lora_a")
        self.mindpet_delta_lora_plus_a = Parameter(Tensor(np.zeros((2, 2), np.float32)),
                                                   name="mindpet_delta_lora_plus_a")
        self.weight = Parameter(Tensor(np.zeros((2, 2), np.float32)), name="weight")

    def construct(self, x):
        return x


def test_freeze_lora_freezes_a_registered_lora_plus_parameter(lora_plus):
    assert methods.method_of("mindpet_delta_lora_plus_a") == lora_plus
    net = _TwoLoras()
    freeze_delta(net, "lora")
    trainable = {n for n, p in net.parameters_and_names() if p.requires_grad}
    assert trainable == {"mindpet_delta_lora_a"}
    freeze_delta(net, "lora_plus")
    trainable = {n for n, p in net.parameters_and_names() if p.requires_grad}
    assert trainable == {"mindpet_delta_lora_plus_a"}


def test_register_method_rejects_bad_names():
    with pytest.raises(ValueError, match="lower-case identifier"):
        methods.register_method("Lora-Plus")


def test_layers_declare_method_prefix_and_hyper_parameters():
    assert LoRADense.delta_method == "lora" and LoRADense.delta_param_prefix == "mindpet_delta_lora_"
    assert layer_spec(LoRADense).hyper_parameters["lora_dropout"] == "lora_dropout_p"
    assert LowRankAdapterLayer.delta_param_prefix == "mindpet_delta_low_rank_adapter_"
    for cls in (AdapterDense, AdapterLayer, LowRankAdapterDense, LowRankAdapterLayer):
        assert layer_spec(cls).method in methods.registered_methods()
    layer = LowRankAdapterLayer(8, reduction_factor=2, low_rank_size=2)
    assert {n.split(".")[-1] for n, _ in layer.parameters_and_names()} == {
        f"mindpet_delta_low_rank_adapter_{s}" for s in
        ("down_left", "down_right", "down_bias", "up_left", "up_right", "up_bias")}


def test_inject_reads_the_registry():
    assert list(METHODS) == ["lora", "adapter", "low_rank_adapter"] == list(injectable_layers())
    assert DELTA_LAYERS == (LoRADense, AdapterDense, LowRankAdapterDense)
    assert METHODS["lora"].defaults == {"lora_dropout": 0.0}
