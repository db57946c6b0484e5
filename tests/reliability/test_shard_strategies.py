"""Every ``shard`` argument of every delta layer is validated without devices, then lands on its primitive.

A strategy is a tuple holding one tuple of positive ints per input of the primitive, each as long as
that input's rank (activation strategies: one entry per input of the activation, the data's of 2 dims
since the layers apply activations to 2-D data; without activation any number of 2-dim entries, as in
the spec's examples; tests/reliability/test_activation_shard.py covers every activation name). A malformed strategy raises TypeError (not a tuple of tuples) or
ValueError (bad entries, counts or lengths) naming the argument, and nothing at all is attached.
Semi-auto parallel itself compiles on Ascend and GPU only, so CPU tests stop at the primitives.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from mindspore import nn, ops

from mindpet.delta import AdapterDense, AdapterLayer, LoRADense, LowRankAdapterDense, LowRankAdapterLayer
from mindpet.delta._activation import activation_primitives

# (argument, primitives it reaches, input ranks; an activation's: here ReLU, one input of 2 dims)
Plan = List[Tuple[str, Callable[[nn.Cell], list], Optional[Sequence[int]]]]


def prim(*path: str) -> Callable[[nn.Cell], list]:
    def get(layer: nn.Cell) -> list:
        obj = layer
        for attr in path:
            obj = getattr(obj, attr)
        return [obj]
    return get


def act(*path: str) -> Callable[[nn.Cell], list]:
    return lambda layer: activation_primitives(prim(*path)(layer)[0])


LORA_PLAN: Plan = [
    ("strategy_org_dense_matmul", prim("matmul"), (2, 2)),
    ("strategy_org_bias_add", prim("bias_add"), (2, 1)),
    ("strategy_lora_dropout", prim("lora_dropout"), (2,)),
    ("strategy_lora_a_matmul", prim("lora_a_matmul"), (2, 2)),
    ("strategy_lora_b_matmul", prim("lora_b_matmul"), (2, 2)),
    ("strategy_lora_mul", prim("mul"), (2, 0)),
    ("strategy_lora_add", prim("add"), (2, 2)),
    ("strategy_activation", act("activation"), (2,)),
]


def _adapter_plan(sub: Tuple[str, ...]) -> Plan:
    return [
        ("strategy_matmul_down_sampler", prim(*sub, "matmul_down_sampler"), (2, 2)),
        ("strategy_bias_down_sampler", prim(*sub, "bias_add_down_sampler"), (2, 1)),
        ("strategy_non_linearity", act(*sub, "non_linearity"), (2,)),
        ("strategy_matmul_up_sampler", prim(*sub, "matmul_up_sampler"), (2, 2)),
        ("strategy_bias_up_sampler", prim(*sub, "bias_add_up_sampler"), (2, 1)),
        ("strategy_residual_add", prim(*sub, "residual_add"), (2, 2)),
    ]


def _low_rank_plan(sub: Tuple[str, ...]) -> Plan:
    return [
        ("strategy_matmul_down_sampler_weight", prim(*sub, "matmul_down_sampler_weight"), (2, 2)),
        ("strategy_matmul_down_sampler_input", prim(*sub, "matmul_down_sampler_input"), (2, 2)),
        ("strategy_bias_down_sampler", prim(*sub, "bias_add_down_sampler"), (2, 1)),
        ("strategy_non_linearity", act(*sub, "non_linearity"), (2,)),
        ("strategy_matmul_up_sampler_weight", prim(*sub, "matmul_up_sampler_weight"), (2, 2)),
        ("strategy_matmul_up_sampler_input", prim(*sub, "matmul_up_sampler_input"), (2, 2)),
        ("strategy_bias_up_sampler", prim(*sub, "bias_add_up_sampler"), (2, 1)),
        ("strategy_residual_add", prim(*sub, "residual_add"), (2, 2)),
    ]


DENSE_PLAN: Plan = [
    ("strategy_matmul_org", prim("matmul"), (2, 2)),
    ("strategy_bias_org", prim("bias_add"), (2, 1)),
    ("strategy_activation_org", act("activation"), (2,)),
]

# Layers built with a primitive-backed activation, so every strategy has somewhere to land.
LAYERS: Dict[str, Tuple[Callable[[], nn.Cell], Plan]] = {
    "LoRADense": (lambda: LoRADense(8, 4, 2, 4, 0.1, activation=ops.ReLU()), LORA_PLAN),
    "AdapterLayer": (lambda: AdapterLayer(8, 4, non_linearity="relu"), _adapter_plan(())),
    "AdapterDense": (lambda: AdapterDense(6, 8, activation="relu", bottleneck_size=4),
                     DENSE_PLAN + _adapter_plan(("adapter",))),
    "LowRankAdapterLayer": (lambda: LowRankAdapterLayer(8, 2, 2, non_linearity="relu"), _low_rank_plan(())),
    "LowRankAdapterDense": (lambda: LowRankAdapterDense(6, 8, activation=nn.ReLU(), reduction_factor=2),
                            DENSE_PLAN + _low_rank_plan(("low_rank_adapter",))),
}


def strategy_of(p) -> Optional[tuple]:
    return p.attrs.get("in_strategy")


def valid_strategy(ranks: Optional[Sequence[int]], first: int = 2) -> tuple:
    """Data parallel on the first input's first dim, ones elsewhere (activations: one 2-D entry)."""
    ranks = (2,) if ranks is None else ranks
    return tuple(tuple([first] + [1] * (r - 1)) if i == 0 and r else tuple([1] * r) for i, r in enumerate(ranks))


def all_primitives(layer: nn.Cell, plan: Plan) -> list:
    return [p for _, get, _ in plan for p in get(layer)]


def bad_strategies(ranks: Optional[Sequence[int]]) -> List[Tuple[str, object, type]]:
    """Malformed variants of a valid strategy: (label, value, expected error)."""
    good = valid_strategy(ranks)
    first = good[0]
    out = [
        ("list", list(good), TypeError),
        ("inner list", (list(first),) + good[1:], TypeError),
        ("flat", first, TypeError),
        ("str", "data_parallel", TypeError),
        ("empty", (), TypeError),
        ("zero", ((0,) + first[1:],) + good[1:], ValueError),
        ("negative", ((-2,) + first[1:],) + good[1:], ValueError),
        ("float", ((2.0,) + first[1:],) + good[1:], ValueError),
        ("bool", ((True,) + first[1:],) + good[1:], ValueError),
        ("entry too long", (first + (1,),) + good[1:], ValueError),
        ("entry too short", (first[:-1],) + good[1:], ValueError),
    ]
    if ranks is not None:
        out += [("one entry too many", good + ((1,) * 2,), ValueError)]
        if len(ranks) > 1:
            out += [("one entry missing", good[:-1], ValueError)]
    return out


CASES = [(cls, arg, label, value, error)
         for cls, (_, plan) in LAYERS.items() for arg, _, ranks in plan
         for label, value, error in bad_strategies(ranks)]


@pytest.mark.parametrize("cls", sorted(LAYERS))
def test_every_strategy_lands_on_its_primitive(cls):
    make, plan = LAYERS[cls]
    layer = make()
    strategies = {arg: valid_strategy(ranks, first=2 + i % 3) for i, (arg, _, ranks) in enumerate(plan)}
    assert layer.shard(**strategies) is layer
    for arg, get, _ in plan:
        prims = get(layer)
        assert prims, f"{cls}.{arg} reaches no primitive"
        for p in prims:
            assert strategy_of(p) == strategies[arg], f"{cls}.{arg} -> {p.name}"


@pytest.mark.parametrize("cls", sorted(LAYERS))
def test_shard_signature_matches_the_plan(cls):
    """The plan above lists every strategy argument of the method (nothing untested)."""
    import inspect
    make, plan = LAYERS[cls]
    params = [n for n, p in inspect.signature(make().shard).parameters.items()
              if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert params == [arg for arg, _, _ in plan]


@pytest.mark.parametrize("cls,arg,label,value,error", CASES,
                         ids=[f"{c}.{a}-{lab}" for c, a, lab, _, _ in CASES])
def test_malformed_strategy_raises_naming_it_and_attaches_nothing(cls, arg, label, value, error):
    make, plan = LAYERS[cls]
    layer = make()
    others = {a: valid_strategy(r) for a, _, r in plan if a != arg}
    with pytest.raises(error) as info:
        layer.shard(**others, **{arg: value})
    assert f"'{arg}'" in str(info.value)
    assert all(strategy_of(p) is None for p in all_primitives(layer, plan)), "attached before validating"


@pytest.mark.parametrize("make,arg", [
    (lambda: LoRADense(8, 4, 2, 4, 0.1), "strategy_activation"),
    (lambda: AdapterDense(6, 8, bottleneck_size=4), "strategy_activation_org"),
    (lambda: LowRankAdapterDense(6, 8, reduction_factor=2), "strategy_activation_org"),
], ids=["LoRADense", "AdapterDense", "LowRankAdapterDense"])
def test_activation_strategy_is_validated_even_without_activation(make, arg):
    with pytest.raises(ValueError, match=arg):
        make().shard(**{arg: ((2, 1, 1),)})
    make().shard(**{arg: ((2, 1),)})  # well-formed: accepted, no effect


def test_spec_examples_validate_and_attach():
    """The calls of the user document, verbatim (activation strategies with two entries included)."""
    lora = LoRADense(in_channels=8, out_channels=4, lora_rank=2, lora_alpha=4, lora_dropout=0.0)
    lora.shard(strategy_org_dense_matmul=((2, 1), (4, 1)), strategy_org_bias_add=((2, 4), (4,)),
               strategy_lora_dropout=((2, 1),), strategy_lora_a_matmul=((2, 1), (1, 1)),
               strategy_lora_b_matmul=((2, 1), (4, 1)), strategy_lora_mul=((2, 4), ()),
               strategy_lora_add=((2, 4), (2, 4)), strategy_activation=((2, 4), (2, 4)))
    assert strategy_of(lora.mul) == ((2, 4), ())
    adapter = AdapterDense(in_channels=8, out_channels=8, bottleneck_size=4)
    adapter.shard(strategy_matmul_org=((2, 4), (1, 4)), strategy_bias_org=((2, 1), (1,)),
                  strategy_activation_org=((2, 1),), strategy_matmul_down_sampler=((2, 1), (1, 1)),
                  strategy_bias_down_sampler=((2, 1), (1,)), strategy_non_linearity=((2, 1),),
                  strategy_matmul_up_sampler=((2, 1), (1, 1)), strategy_bias_up_sampler=((2, 1), (1,)),
                  strategy_residential_add=((2, 1), (2, 1)))
    assert strategy_of(adapter.adapter.residual_add) == ((2, 1), (2, 1))
    layer = AdapterLayer(hidden_size=8, bottleneck_size=4)
    layer.shard(strategy_matmul_down_sampler=((2, 1), (1, 1)), strategy_bias_down_sampler=((2, 1), (1,)),
                strategy_non_linearity=((2, 1),), strategy_matmul_up_sampler=((2, 1), (1, 1)),
                strategy_bias_up_sampler=((2, 1), (1,)), strategy_residential_add=((2, 1), (2, 1)))
    assert strategy_of(layer.matmul_up_sampler) == ((2, 1), (1, 1))
