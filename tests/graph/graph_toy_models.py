"""Tiny networks whose parameter names follow the ``mindpet_delta_<mode>`` contract.

They do not use ``mindpet.delta`` layers: ``mindpet.graph`` works on names only. They live in a module of
their own (not conftest.py): MindSpore's GRAPH parser resolves a Cell's globals through its module name,
and every directory's conftest module is named ``conftest``, so Cells defined there could be compiled
against another conftest's globals.
"""
import numpy as np
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
