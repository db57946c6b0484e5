"""Tiny networks whose parameter names follow the ``mindpet_delta_<mode>`` contract.

They do not use ``mindpet.delta`` layers: ``mindpet.graph`` works on names only.
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

D, R = 4, 2


def _param(shape, name):
    return Parameter(Tensor(np.zeros(shape, np.float32)), name=name)


class Adapter(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mindpet_delta_adapter_down_weight = _param((R, D), "mindpet_delta_adapter_down_weight")
        self.mindpet_delta_adapter_up_weight = _param((D, R), "mindpet_delta_adapter_up_weight")

    def construct(self, h):
        z = ops.relu(ops.matmul(h, self.mindpet_delta_adapter_down_weight.T))
        return h + ops.matmul(z, self.mindpet_delta_adapter_up_weight.T)


class LowRankAdapter(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mindpet_delta_low_rank_adapter_u = _param((D, 1), "mindpet_delta_low_rank_adapter_u")
        self.mindpet_delta_low_rank_adapter_v = _param((1, D), "mindpet_delta_low_rank_adapter_v")

    def construct(self, h):
        w = ops.matmul(self.mindpet_delta_low_rank_adapter_u, self.mindpet_delta_low_rank_adapter_v)
        return h + ops.matmul(h, w.T)


class Layer(nn.Cell):
    """Dense + LoRA pair + adapter + low-rank adapter + LayerNorm."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(D, D)
        self.mindpet_delta_lora_a = _param((R, D), "mindpet_delta_lora_a")
        self.mindpet_delta_lora_b = _param((D, R), "mindpet_delta_lora_b")
        self.adapter = Adapter()
        self.low_rank = LowRankAdapter()
        self.norm = nn.LayerNorm((D,))

    def construct(self, x):
        h = self.dense(x) + ops.matmul(ops.matmul(x, self.mindpet_delta_lora_a.T), self.mindpet_delta_lora_b.T)
        return self.norm(self.low_rank(self.adapter(h)))


class ToyNet(nn.Cell):
    """``encoder.{0,1}.*`` layers, a prefix parameter and a ``head`` Dense(4, 2)."""

    def __init__(self, seed=0):
        super().__init__()
        self.mindpet_delta_prefixtuning_key = _param((1, D), "mindpet_delta_prefixtuning_key")
        self.encoder = nn.CellList([Layer(), Layer()])
        self.head = nn.Dense(D, 2)
        rng = np.random.RandomState(seed)
        for param in self.get_parameters():
            param.set_data(Tensor((rng.standard_normal(param.shape) * 0.5).astype(np.float32)))

    def construct(self, x):
        h = x + self.mindpet_delta_prefixtuning_key
        for layer in self.encoder:
            h = layer(h)
        return self.head(h)


PER_LAYER = ["mindpet_delta_lora_a", "mindpet_delta_lora_b", "dense.weight", "dense.bias",
             "adapter.mindpet_delta_adapter_down_weight", "adapter.mindpet_delta_adapter_up_weight",
             "low_rank.mindpet_delta_low_rank_adapter_u", "low_rank.mindpet_delta_low_rank_adapter_v",
             "norm.gamma", "norm.beta"]
ALL_NAMES = (["mindpet_delta_prefixtuning_key"]
             + [f"encoder.{i}.{n}" for i in range(2) for n in PER_LAYER] + ["head.weight", "head.bias"])


@pytest.fixture(scope="session")
def toy_net():
    return ToyNet


@pytest.fixture(scope="session")
def all_names():
    return list(ALL_NAMES)


def grad_state(net):
    return {n: p.requires_grad for n, p in net.parameters_and_names()}


@pytest.fixture(scope="session")
def snapshot():
    """``snapshot(net)`` -> {name: requires_grad}."""
    return grad_state


@pytest.fixture(scope="session")
def train_data():
    """8 samples of (x, y), batched by 2: 4 steps per epoch."""
    rng = np.random.RandomState(1)
    return rng.standard_normal((8, D)).astype(np.float32), rng.standard_normal((8, 2)).astype(np.float32)


def make_dataset(x, y):
    import mindspore.dataset as ds
    return ds.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(2)


@pytest.fixture(scope="session")
def dataset(train_data):
    """``dataset(n=8)``: the first ``n`` samples, batched by 2."""
    x, y = train_data
    return lambda n=8: make_dataset(x[:n], y[:n])


@pytest.fixture
def pynative():
    """PYNATIVE mode for the test (fast for tiny training runs), GRAPH restored afterwards."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)
