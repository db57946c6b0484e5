"""Property tests of the Dense-like delta layers over constructor arguments and input shapes.

For LoRADense, AdapterDense, AdapterLayer, LowRankAdapterDense and LowRankAdapterLayer:
- valid arguments and an input of shape (*, in) give an output of shape (*, out) in the input's
  dtype, with finite values, the same whatever the leading dimensions (no mixing across rows);
- one invalid argument raises TypeError or ValueError (KeyError for an unknown activation name, which
  is also a ValueError here) naming the argument - never another exception;
- an input whose last dimension is not ``in`` (or a scalar) raises ValueError - never a broadcast;
- an integer or bool input raises TypeError naming the input and the accepted float dtypes.
PYNATIVE mode, tiny sizes, derandomized hypothesis: reproducible and fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict

import numpy as np
import pytest
import mindspore as ms
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeUniform, Normal
from mindspore.nn.layer.activation import _activation

from mindpet.delta import AdapterDense, AdapterLayer, LoRADense, LowRankAdapterDense, LowRankAdapterLayer

# No shrinking: a failure reports its first example at once instead of minutes of MindSpore calls.
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SIZE = st.integers(1, 6)
FLOATS = (ms.float32, ms.float16)
# Activations that run on CPU for (N, C) data, as names, Cells and Primitives (new instance per draw).
ACTIVATIONS = st.sampled_from([
    lambda: None, lambda: "relu", lambda: "gelu", lambda: "tanh", lambda: "sigmoid", lambda: "ReLU",
    lambda: "leakyrelu", lambda: "softmax", nn.ReLU, nn.GELU, ops.ReLU, ops.Sigmoid]).map(lambda make: make())
NON_LINEARITIES = st.sampled_from(["gelu", "relu", "tanh", "sigmoid", "fast_gelu", "silu", "elu"])
INITS = st.sampled_from([lambda: "normal", lambda: "zeros", lambda: "xavier_uniform", lambda: Normal(0.5),
                         lambda: HeUniform(math.sqrt(5)), lambda: 0.1]).map(lambda make: make())
# Fan-based initializers (xavier, He) need a 2-D shape: not for a bias (as in nn.Dense).
BIAS_INITS = st.sampled_from([lambda: "normal", lambda: "zeros", lambda: "ones", lambda: "uniform",
                              lambda: Normal(0.5), lambda: -0.5]).map(lambda make: make())
KNOWN_ACTIVATIONS = {name.lower() for name in _activation}

# ----------------------------------------------------------------------------------- invalid values
NOT_INT = st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans(),
                    st.just([2]), st.just(Tensor(2)))
NON_POSITIVE = st.integers(-(2 ** 40), 0)
BAD_SIZE = st.one_of(NOT_INT, NON_POSITIVE)
BAD_BOOL = st.one_of(st.integers(), st.none(), st.text(max_size=3), st.floats())
BAD_DTYPE = st.sampled_from([ms.int32, ms.float64, ms.bool_, ms.int8, "float32", None, np.float32, 16])
BAD_ACTIVATION = st.one_of(st.integers(), st.floats(), st.just(nn.ReLU),
                           st.text(min_size=1, max_size=6).filter(lambda s: s.lower() not in KNOWN_ACTIVATIONS),
                           st.sampled_from(["threshold", "softmax2d"]))
BAD_NON_LINEARITY = st.one_of(st.none(), st.integers(), st.just(nn.GELU()),
                              st.text(min_size=1, max_size=6).filter(lambda s: s.lower() not in KNOWN_ACTIVATIONS))
BAD_INIT_NAME = st.sampled_from(["gauss", "xavier", "no_such_init", ""])
BAD_INIT_TYPE = st.sampled_from([None, [0.1], (0.0,), {"a": 1}, np.zeros((2, 2)), True])


def wrong_tensor(shape_of: Callable[[Dict], tuple]) -> Callable[[Dict], st.SearchStrategy]:
    """A Tensor whose shape differs from ``shape_of(kwargs)`` (rank or one dimension)."""
    def make(kw: Dict) -> st.SearchStrategy:
        good = shape_of(kw)
        shapes = st.one_of(st.lists(SIZE, min_size=0, max_size=3), st.just(list(good)))
        return shapes.map(lambda s: tuple(s) if tuple(s) != good else good[:-1] + (good[-1] + 1,)).map(
            lambda s: Tensor(np.zeros(s, np.float32)))
    return make


def const(strategy: st.SearchStrategy) -> Callable[[Dict], st.SearchStrategy]:
    return lambda _kw: strategy


@dataclass(frozen=True)
class LayerSpec:
    """How to build one layer class from kwargs, its in/out sizes and its invalid arguments."""

    name: str
    cls: type
    valid: st.SearchStrategy                       # kwargs
    in_dim: Callable[[Dict], int]
    out_dim: Callable[[Dict], int]
    bad: Dict[str, Callable[[Dict], st.SearchStrategy]]
    needs: Dict[str, Dict] = None                  # arguments an invalid value needs to matter

    def build(self, kw: Dict) -> nn.Cell:
        return self.cls(**kw)


def _dense_kwargs(**extra) -> st.SearchStrategy:
    return st.fixed_dictionaries(dict(
        in_channels=SIZE, out_channels=SIZE, weight_init=INITS, bias_init=BIAS_INITS, has_bias=st.booleans(),
        activation=ACTIVATIONS, param_init_type=st.sampled_from(FLOATS), compute_dtype=st.sampled_from(FLOATS),
        **extra))


DENSE_BAD = {
    "in_channels": const(BAD_SIZE), "out_channels": const(BAD_SIZE), "has_bias": const(BAD_BOOL),
    "activation": const(BAD_ACTIVATION), "param_init_type": const(BAD_DTYPE), "compute_dtype": const(BAD_DTYPE),
    "weight_init": lambda kw: st.one_of(BAD_INIT_NAME, BAD_INIT_TYPE,
                                        wrong_tensor(lambda k: (k["out_channels"], k["in_channels"]))(kw)),
    "bias_init": lambda kw: st.one_of(BAD_INIT_NAME, BAD_INIT_TYPE,
                                      wrong_tensor(lambda k: (k["out_channels"],))(kw)),
}

LORA = LayerSpec(
    "LoRADense", LoRADense,
    st.fixed_dictionaries(dict(
        in_channels=SIZE, out_channels=SIZE, lora_rank=SIZE,
        lora_alpha=st.one_of(st.integers(-16, 16).filter(bool),
                             st.floats(-64, 64).filter(lambda a: abs(a) > 1e-3)),
        lora_dropout=st.floats(0.0, 0.95), lora_a_init=INITS, lora_b_init=INITS, weight_init=INITS,
        bias_init=BIAS_INITS, has_bias=st.booleans(), activation=ACTIVATIONS,
        param_init_type=st.sampled_from(FLOATS + (ms.bfloat16,)),
        compute_dtype=st.sampled_from(FLOATS + (ms.bfloat16,)))),
    lambda kw: kw["in_channels"], lambda kw: kw["out_channels"],
    {**DENSE_BAD,
     "lora_rank": const(BAD_SIZE),
     "lora_alpha": const(st.one_of(st.sampled_from([0, 0.0, -0.0, math.inf, -math.inf, math.nan]),
                                   st.text(max_size=2), st.none(), st.booleans())),
     "lora_dropout": const(st.one_of(st.floats().filter(lambda p: not 0.0 <= p < 1.0), st.integers(),
                                     st.none(), st.text(max_size=2))),
     "lora_a_init": lambda kw: st.one_of(BAD_INIT_NAME, BAD_INIT_TYPE,
                                         wrong_tensor(lambda k: (k["lora_rank"], k["in_channels"]))(kw)),
     "lora_b_init": lambda kw: st.one_of(BAD_INIT_NAME, BAD_INIT_TYPE,
                                         wrong_tensor(lambda k: (k["out_channels"], k["lora_rank"]))(kw))},
    needs={"bias_init": {"has_bias": True}})  # as nn.Dense, bias_init is ignored without bias

ADAPTER_DENSE = LayerSpec(
    "AdapterDense", AdapterDense, _dense_kwargs(bottleneck_size=SIZE, non_linearity=NON_LINEARITIES),
    lambda kw: kw["in_channels"], lambda kw: kw["out_channels"],
    {**DENSE_BAD, "bottleneck_size": const(BAD_SIZE), "non_linearity": const(BAD_NON_LINEARITY)})

ADAPTER_LAYER = LayerSpec(
    "AdapterLayer", AdapterLayer,
    st.fixed_dictionaries(dict(hidden_size=SIZE, bottleneck_size=SIZE, non_linearity=NON_LINEARITIES,
                               param_init_type=st.sampled_from(FLOATS), compute_dtype=st.sampled_from(FLOATS))),
    lambda kw: kw["hidden_size"], lambda kw: kw["hidden_size"],
    {"hidden_size": const(BAD_SIZE), "bottleneck_size": const(BAD_SIZE), "non_linearity": const(BAD_NON_LINEARITY),
     "param_init_type": const(BAD_DTYPE), "compute_dtype": const(st.sampled_from([ms.bfloat16, ms.int64, "fp16"]))})


def _reduction(size_key: str) -> Callable[[Dict], st.SearchStrategy]:
    """A bad reduction_factor: not an int, not positive, or larger than the hidden size."""
    return lambda kw: st.one_of(BAD_SIZE, st.integers(kw[size_key] + 1, kw[size_key] + 8))


LOW_RANK_W_INIT = st.sampled_from([lambda: "xavier_uniform", lambda: "normal", lambda: Normal(0.3),
                                   lambda: "he_uniform"]).map(lambda make: make())
BAD_LOW_RANK_W_INIT = st.one_of(BAD_INIT_NAME, st.floats(allow_nan=False), st.integers(), st.none(),
                                st.just(Tensor(np.zeros((2, 1), np.float32))))

LOW_RANK_DENSE = LayerSpec(
    "LowRankAdapterDense", LowRankAdapterDense,
    _dense_kwargs(low_rank_size=SIZE, low_rank_w_init=LOW_RANK_W_INIT, non_linearity=NON_LINEARITIES).flatmap(
        lambda kw: st.integers(1, kw["out_channels"]).map(lambda r: {**kw, "reduction_factor": r})),
    lambda kw: kw["in_channels"], lambda kw: kw["out_channels"],
    {**DENSE_BAD, "reduction_factor": _reduction("out_channels"), "low_rank_size": const(BAD_SIZE),
     "low_rank_w_init": const(BAD_LOW_RANK_W_INIT), "non_linearity": const(BAD_NON_LINEARITY)})

LOW_RANK_LAYER = LayerSpec(
    "LowRankAdapterLayer", LowRankAdapterLayer,
    st.fixed_dictionaries(dict(
        hidden_size=SIZE, low_rank_size=SIZE, low_rank_w_init=LOW_RANK_W_INIT, non_linearity=NON_LINEARITIES,
        param_init_type=st.sampled_from(FLOATS), compute_dtype=st.sampled_from(FLOATS))).flatmap(
        lambda kw: st.integers(1, kw["hidden_size"]).map(lambda r: {**kw, "reduction_factor": r})),
    lambda kw: kw["hidden_size"], lambda kw: kw["hidden_size"],
    {"hidden_size": const(BAD_SIZE), "reduction_factor": _reduction("hidden_size"), "low_rank_size": const(BAD_SIZE),
     "low_rank_w_init": const(BAD_LOW_RANK_W_INIT), "non_linearity": const(BAD_NON_LINEARITY),
     "param_init_type": const(BAD_DTYPE), "compute_dtype": const(BAD_DTYPE)})

LAYERS = [LORA, ADAPTER_DENSE, ADAPTER_LAYER, LOW_RANK_DENSE, LOW_RANK_LAYER]
LEADING = st.lists(st.integers(0, 3), min_size=0, max_size=3)


def _input(data, in_dim: int, leading) -> np.ndarray:
    seed = data.draw(st.integers(0, 2 ** 31 - 1), label="seed")
    dtype = data.draw(st.sampled_from([np.float32, np.float16]), label="input dtype")
    return np.random.default_rng(seed).standard_normal(tuple(leading) + (in_dim,)).astype(dtype)


def _tolerance(kw: Dict, x: np.ndarray) -> Dict[str, float]:
    low = x.dtype == np.float16 or any(kw.get(k) in (ms.float16, ms.bfloat16)
                                       for k in ("compute_dtype", "param_init_type"))
    return dict(rtol=2e-2, atol=2e-2) if low else dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", LAYERS, ids=[s.name for s in LAYERS])
@PROPERTY
@given(data=st.data())
def test_valid_arguments_give_the_right_shape_and_finite_values(pynative, spec: LayerSpec, data):
    kw = data.draw(spec.valid, label="kwargs")
    layer = spec.build(kw)
    leading = data.draw(LEADING, label="leading dims")
    x = _input(data, spec.in_dim(kw), leading)
    y = layer(Tensor(x)).asnumpy()
    assert y.shape == tuple(leading) + (spec.out_dim(kw),)
    assert y.dtype == x.dtype
    assert np.isfinite(y).all()
    # Leading dimensions only batch rows: the same rows flattened give the same values.
    flat = layer(Tensor(x.reshape(-1, x.shape[-1]))).asnumpy()
    np.testing.assert_allclose(y.reshape(flat.shape).astype(np.float64), flat.astype(np.float64),
                               **_tolerance(kw, x))


BAD_ARGS = [(spec, arg) for spec in LAYERS for arg in sorted(spec.bad)]


@pytest.mark.parametrize("spec,arg", BAD_ARGS, ids=[f"{s.name}-{a}" for s, a in BAD_ARGS])
@settings(PROPERTY, max_examples=10)
@given(data=st.data())
def test_one_invalid_argument_raises_type_or_value_error_naming_it(pynative, spec: LayerSpec, arg: str, data):
    kw = data.draw(spec.valid, label="valid kwargs")
    kw.update((spec.needs or {}).get(arg, {}))
    kw[arg] = data.draw(spec.bad[arg](kw), label="invalid value")
    with pytest.raises((TypeError, ValueError, KeyError)) as info:
        spec.build(kw)
    assert arg in str(info.value)


@pytest.mark.parametrize("spec", LAYERS, ids=[s.name for s in LAYERS])
@PROPERTY
@given(data=st.data())
def test_wrong_last_input_dimension_raises_value_error(pynative, spec: LayerSpec, data):
    kw = data.draw(spec.valid, label="kwargs")
    layer = spec.build(kw)
    in_dim = spec.in_dim(kw)
    last = data.draw(st.integers(1, 8).filter(lambda d: d != in_dim), label="wrong last dim")
    leading = data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2), label="leading dims")
    x = np.ones(tuple(leading) + (last,), np.float32)
    with pytest.raises(ValueError) as info:
        layer(Tensor(x)).asnumpy()
    assert str(in_dim) in str(info.value) and str(tuple(x.shape)) in str(info.value)
    with pytest.raises(ValueError):  # a scalar has no last dimension at all
        layer(Tensor(np.float32(1.0))).asnumpy()


NON_FLOAT_DTYPES = st.sampled_from([ms.int8, ms.int16, ms.int32, ms.int64, ms.uint8, ms.bool_])


@pytest.mark.parametrize("spec", LAYERS, ids=[s.name for s in LAYERS])
@settings(PROPERTY, max_examples=10)
@given(data=st.data())
def test_integer_or_bool_input_raises_type_error(pynative, spec: LayerSpec, data):
    kw = data.draw(spec.valid, label="kwargs")
    layer = spec.build(kw)
    leading = data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2), label="leading dims")
    dtype = data.draw(NON_FLOAT_DTYPES, label="input dtype")
    x = Tensor(np.ones(tuple(leading) + (spec.in_dim(kw),), np.float32)).astype(dtype)
    with pytest.raises(TypeError) as info:
        layer(x).asnumpy()
    assert "'x'" in str(info.value) and "mindspore.float32" in str(info.value) and str(dtype) in str(info.value)
