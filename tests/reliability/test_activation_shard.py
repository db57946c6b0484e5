"""Every activation name can be sharded, and an activation strategy must fit the activation (issue 19).

MindPet 1.0.4's own tests found six names ``shard`` refused (their MindSpore Cells compute through
functional ops) and strategies accepted whatever their number of entries. Every name now resolves to
primitives ``shard`` reaches (``mindpet.delta._activation``), computing what MindSpore's Cell computes;
an activation strategy has one entry per input of the activation, and anything else raises before
anything is attached.
"""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.delta import AdapterDense, AdapterLayer, LoRADense, LowRankAdapterDense, LowRankAdapterLayer
from mindpet._mindspore import activation_names
from mindpet.delta._activation import _PRIMITIVE_FORMS, _UNUSABLE_NAMES, activation_primitives, resolve_activation

def usable_names():
    return [n for n in activation_names() if n not in _UNUSABLE_NAMES and n != "threshold"]


# (layer, strategy argument, build(activation name) -> (layer, the activation the argument reaches))
SHARD_TARGETS = [
    ("LoRADense", "strategy_activation", lambda a: _with(LoRADense(8, 4, 2, 4, 0.0, activation=a), "activation")),
    ("AdapterDense", "strategy_activation_org",
     lambda a: _with(AdapterDense(6, 8, activation=a, bottleneck_size=4), "activation")),
    ("AdapterDense", "strategy_non_linearity",
     lambda a: _with(AdapterDense(6, 8, bottleneck_size=4, non_linearity=a), "adapter", "non_linearity")),
    ("AdapterLayer", "strategy_non_linearity", lambda a: _with(AdapterLayer(8, 4, non_linearity=a), "non_linearity")),
    ("LowRankAdapterDense", "strategy_activation_org",
     lambda a: _with(LowRankAdapterDense(6, 8, activation=a, reduction_factor=2), "activation")),
    ("LowRankAdapterDense", "strategy_non_linearity",
     lambda a: _with(LowRankAdapterDense(6, 8, reduction_factor=2, non_linearity=a), "low_rank_adapter",
                     "non_linearity")),
    ("LowRankAdapterLayer", "strategy_non_linearity",
     lambda a: _with(LowRankAdapterLayer(8, 2, 2, non_linearity=a), "non_linearity")),
]


def _with(layer, *path):
    act = layer
    for attr in path:
        act = getattr(act, attr)
    return layer, act


def _strategy_for(act) -> tuple:
    """A valid activation strategy: data parallel 2 on the data, ones on a PReLU weight."""
    ranks = (2, 1) if _is_prelu(act) else (2,)
    return tuple((2, 1) if r == 2 else (1,) * r for r in ranks)


def _is_prelu(act) -> bool:
    return any(isinstance(p, ops.PReLU) for p in activation_primitives(act))


@pytest.mark.parametrize("layer,arg,build", SHARD_TARGETS, ids=[f"{c[0]}.{c[1]}" for c in SHARD_TARGETS])
def test_every_activation_name_takes_a_strategy_on_every_layer(layer, arg, build):
    for name in usable_names():
        net, act = build(name)
        prims = activation_primitives(act)
        assert prims, f"{layer}: activation {name!r} holds no primitive"
        strategy = _strategy_for(act)
        net.shard(**{arg: strategy})
        for prim in prims:
            got = prim.attrs.get("in_strategy")
            assert got is not None, f"{layer}.{arg}: {name!r} left {type(prim).__name__} without a strategy"
            assert got[0] == (2, 1), f"{layer}.{arg}: {name!r} -> {type(prim).__name__} got {got}"


@pytest.mark.parametrize("name", sorted(_PRIMITIVE_FORMS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_primitive_forms_compute_what_mindspore_cells_compute(mode, name, dtype):
    """The replacement of each name against MindSpore's own Cell in float32: values and gradients."""
    x32 = (np.random.randn(4, 6) * 3).astype(np.float32)
    x = Tensor(x32.astype(dtype))
    ours, ref = resolve_activation(name, "activation", "test"), nn.get_activation(name)
    tol = 1e-6 if dtype == np.float32 else 4e-3
    x_ref = Tensor(x.asnumpy().astype(np.float32))  # the same (rounded) inputs
    np.testing.assert_allclose(ours(x).asnumpy().astype(np.float64), ref(x_ref).asnumpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(ms.grad(ours)(x).asnumpy().astype(np.float64), ms.grad(ref)(x_ref).asnumpy(),
                               rtol=tol, atol=tol)


def test_logsigmoid_does_not_overflow():
    """log(sigmoid(x)) ~= x for very negative x (MindSpore's Cell computes log(1/(1+exp(-x))): -inf)."""
    x = Tensor(np.array([[-200.0, -30.0, 0.0, 30.0]], np.float32))
    y = resolve_activation("logsigmoid", "activation", "test")(x).asnumpy()
    np.testing.assert_allclose(y, [[-200.0, -30.0, -np.log(2.0), 0.0]], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- activation strategies fit the primitives
def _attached(layer):
    return [p for p in activation_primitives(layer.activation) + [layer.matmul, layer.add]
            if p.attrs.get("in_strategy") is not None]


@pytest.mark.parametrize("activation,bad", [
    ("relu", ((1, 1), (1, 1), (1, 1))),        # the case the original's tests found accepted
    ("relu", ((1, 1), (1, 1))),
    (ops.ReLU(), ((1, 1), (1, 1))),
    (nn.ReLU(), ((1, 1), (1, 1))),
    ("logsigmoid", ((1, 1), (1, 1))),
    ("tanhshrink", ((1, 1), (1, 1))),
    ("prelu", ((2, 1),)),                       # PReLU has two inputs: data and weight
    ("prelu", ((2, 1), (1, 1))),                # its weight has rank 1
    ("preluExt", ((2, 1),)),
    ("relu", ((2, 1, 1),)),
], ids=lambda v: v if isinstance(v, str) else None)
def test_activation_strategy_must_fit_the_activation_inputs(activation, bad):
    layer = LoRADense(8, 4, 2, 4, 0.0, activation=activation)
    with pytest.raises(ValueError, match="strategy_activation"):
        layer.shard(strategy_org_dense_matmul=((2, 1), (1, 1)), strategy_lora_add=((2, 1), (2, 1)),
                    strategy_activation=bad)
    assert not _attached(layer), "attached before validating"


def test_activation_strategy_reaches_each_primitive_with_its_own_inputs():
    logsigmoid = LoRADense(8, 4, 2, 4, 0.0, activation="logsigmoid").shard(strategy_activation=((2, 1),))
    assert [p.attrs["in_strategy"] for p in activation_primitives(logsigmoid.activation)] == [((2, 1),)] * 3
    tanhshrink = LoRADense(8, 4, 2, 4, 0.0, activation="tanhshrink").shard(strategy_activation=((2, 1),))
    assert tanhshrink.activation.sub.attrs["in_strategy"] == ((2, 1), (2, 1))
    leaky = LoRADense(8, 4, 2, 4, 0.0, activation="leakyrelu").shard(strategy_activation=((2, 1),))
    assert leaky.activation.mul.attrs["in_strategy"] == ((2, 1), ())
    assert leaky.activation.maximum.attrs["in_strategy"] == ((2, 1), (2, 1))
    prelu = LoRADense(8, 4, 2, 4, 0.0, activation="prelu").shard(strategy_activation=((2, 1), (1,)))
    assert activation_primitives(prelu.activation)[0].attrs["in_strategy"] == ((2, 1), (1,))


def test_a_cell_whose_primitives_take_different_inputs_is_refused():
    """nn.LogSigmoid holds Mul, Exp, Add, Reciprocal, Log: one strategy cannot fit them (use the name)."""
    layer = LoRADense(8, 4, 2, 4, 0.0, activation=nn.LogSigmoid())
    with pytest.raises(ValueError, match="different inputs"):
        layer.shard(strategy_lora_add=((2, 1), (2, 1)), strategy_activation=((2, 1),))
    assert not _attached(layer)


def test_spec_example_without_activation_still_accepted():
    """The spec's example passes two entries to a layer without activation: no effect, accepted."""
    layer = LoRADense(8, 4, 2, 4, 0.0)
    layer.shard(strategy_lora_add=((2, 4), (2, 4)), strategy_activation=((2, 4), (2, 4)))
    assert layer.add.attrs["in_strategy"] == ((2, 4), (2, 4))
