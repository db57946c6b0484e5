"""Tiny networks whose parameter names follow the ``mindpet_delta_<mode>`` contract.

They do not use ``mindpet.delta`` layers: ``mindpet.graph`` works on names only.
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from graph_toy_models import D, R, Adapter, Layer, LowRankAdapter, ToyNet, _param  # noqa: F401


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
