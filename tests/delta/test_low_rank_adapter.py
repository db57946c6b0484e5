"""LowRankAdapterLayer and LowRankAdapterDense (spec section 4): values, identity at insertion, gradients,
training, argument errors, shard strategies, freezing (apart from `adapter`) and checkpoints."""
import importlib
import inspect
import math
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal, XavierUniform
from mindspore.train import CheckpointConfig, Model

from mindpet.delta import AdapterDense, LowRankAdapterDense, LowRankAdapterLayer
from mindpet.graph import TrainableParamsCheckPoint, freeze_delta
from adapter_helpers import (ACT, ADAPTER_COMMON_ERRORS, DENSE_STRATEGIES, assert_bad_argument_raises,
                             assert_gradients, assert_reload_reproduces, assert_saved_trainables, case_ids,
                             check_backend_kw, check_dense_strategies, check_log_softmax_rejected,
                             dense_and_delta_params, dense_errors, dense_inits, dense_ref, grads_after_one_step,
                             layer_cases, randomise, regression_data, round16, save_pretrained, strategy_of,
                             to_f64, vjp, weight_grads, wrong, x_of)
from adapter_helpers import parallel_mode  # a fixture  # noqa: F401  pylint: disable=unused-import

D, RF, R = 8, 2, 2    # hidden size, reduction factor, low rank: bottleneck K = D // RF = 4
K = D // RF
CIN = 5               # LowRankAdapterDense input size (out_channels = D)
DELTA = tuple(f"mindpet_delta_low_rank_adapter_{n}"
              for n in ("down_left", "down_right", "down_bias", "up_left", "up_right", "up_bias"))
KEYS = ("dl", "dr", "bd", "ul", "ur", "bu")


# ----------------------------------------------------------------------------- numpy references
def _low_rank_ref(h, p, act="gelu"):
    """h + act(h (Ldl Ldr) + bd) (Lul Lur) + bu in float64 (full projections formed explicitly)."""
    h2 = np.asarray(h, np.float64).reshape(-1, h.shape[-1])
    w_down, w_up = p["dl"] @ p["dr"], p["ul"] @ p["ur"]
    y = h2 + ACT[act](h2 @ w_down + p["bd"]) @ w_up + p["bu"]
    return y.reshape(h.shape)


def _layer_of(cell):
    return cell.low_rank_adapter if isinstance(cell, LowRankAdapterDense) else cell


def _params(cell):
    return dense_and_delta_params(cell, _layer_of(cell), KEYS, DELTA)


def _randomise(cell, seed=7, scale=0.7):
    """Give every low-rank parameter (the zero-initialised ones too) random non-zero values."""
    randomise(_layer_of(cell), DELTA, seed, scale)
    return cell


def _dense_inits(seed=1):
    return dense_inits(D, CIN, seed)


# ----------------------------------------------------------------------------- signature, names, inits
def test_signatures_and_defaults_match_spec():
    sig = inspect.signature(LowRankAdapterDense)
    assert list(sig.parameters) == ["in_channels", "out_channels", "weight_init", "bias_init", "has_bias",
                                    "activation", "reduction_factor", "low_rank_size", "low_rank_w_init",
                                    "non_linearity", "param_init_type", "compute_dtype", "backend", "transpose_b", "base"]
    check_backend_kw(sig)
    assert sig.parameters["transpose_b"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["base"].kind is inspect.Parameter.KEYWORD_ONLY and sig.parameters["base"].default is None
    d = {k: v.default for k, v in sig.parameters.items()}
    assert d["transpose_b"] is True
    assert (d["weight_init"], d["bias_init"], d["has_bias"], d["activation"]) == ("normal", "zeros", True, None)
    assert (d["reduction_factor"], d["low_rank_size"], d["low_rank_w_init"], d["non_linearity"]) == \
        (1, 1, "xavier_uniform", "gelu")
    assert d["param_init_type"] == ms.float32 and d["compute_dtype"] == ms.float16
    sig = inspect.signature(LowRankAdapterLayer)
    assert list(sig.parameters) == ["hidden_size", "reduction_factor", "low_rank_size", "low_rank_w_init",
                                    "non_linearity", "param_init_type", "compute_dtype", "backend"]
    check_backend_kw(sig)
    d = {k: v.default for k, v in sig.parameters.items()}
    assert (d["reduction_factor"], d["low_rank_size"], d["low_rank_w_init"], d["non_linearity"]) == \
        (1, 1, "xavier_uniform", "gelu")
    assert d["param_init_type"] == ms.float32 and d["compute_dtype"] == ms.float16


def test_documented_import_paths():
    """The spec documents the classes as tk.delta.adapter.LowRankAdapter*; tk is the old package name."""
    for path in ("mindpet.delta.adapter", "tk.delta.adapter", "tk.delta", "mindpet.delta.low_rank_adapter"):
        mod = importlib.import_module(path)
        assert mod.LowRankAdapterDense is LowRankAdapterDense and mod.LowRankAdapterLayer is LowRankAdapterLayer
    assert "LowRankAdapterDense" in importlib.import_module("mindpet.delta.adapter").__all__


def test_parameter_names_shapes_dtypes_and_inits():
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.ffn = LowRankAdapterDense(CIN, 96, reduction_factor=5, low_rank_size=3, param_init_type=ms.float16)
            self.post = LowRankAdapterLayer(96, 8)

    net = Net()
    names = [n for n, _ in net.parameters_and_names()]
    assert names == ["ffn.weight", "ffn.bias"] + [f"ffn.low_rank_adapter.{n}" for n in DELTA] + \
        [f"post.{n}" for n in DELTA]
    assert [p.name for p in net.get_parameters()] == names
    assert not any("mindpet_delta_adapter" in n for n in names)  # 'adapter' mode never selects them
    shapes = [getattr(net.ffn.low_rank_adapter, n).shape for n in DELTA]
    assert shapes == [(96, 3), (3, 19), (19,), (19, 3), (3, 96), (96,)]  # K = 96 // 5 = 19
    assert [getattr(net.post, n).shape for n in DELTA] == [(96, 1), (1, 12), (12,), (12, 1), (1, 96), (96,)]
    assert net.post.bottleneck_size == 12 and net.post.low_rank_size == 1
    assert all(p.dtype == ms.float16 for p in net.ffn.get_parameters())
    assert all(p.dtype == ms.float32 for p in net.post.get_parameters())
    for name in (DELTA[0], DELTA[1], DELTA[3]):  # low_rank_w_init = xavier_uniform: U(+-sqrt(6/(fan_in+fan_out)))
        value = getattr(net.post, name).asnumpy()
        assert np.abs(value).max() <= math.sqrt(6 / sum(value.shape)) and value.std() > 0.01, name
    for name in (DELTA[2], DELTA[4], DELTA[5]):  # down bias, up right factor, up bias start at zero
        assert not getattr(net.post, name).asnumpy().any(), name
    layer = LowRankAdapterLayer(16, 2, 2, low_rank_w_init=Normal(sigma=2.0))
    assert layer.mindpet_delta_low_rank_adapter_up_left.asnumpy().std() > 0.5
    assert LowRankAdapterDense(CIN, D, has_bias=False).bias is None


# ----------------------------------------------------------------------------- forward values
LAYER_CASES = layer_cases(D)


@pytest.mark.parametrize("act,shape,x_dtype,pdtype,cdtype,tol", [c[1:] for c in LAYER_CASES],
                         ids=[c[0] for c in LAYER_CASES])
def test_low_rank_layer_forward_matches_float64_reference(mode, act, shape, x_dtype, pdtype, cdtype, tol):
    layer = _randomise(LowRankAdapterLayer(D, RF, R, non_linearity=act, param_init_type=pdtype,
                                           compute_dtype=cdtype))
    x = x_of(shape).astype(x_dtype)
    out = layer(Tensor(x))
    assert out.shape == shape and out.dtype == Tensor(x).dtype
    p = _params(layer)
    if cdtype == ms.float16:
        xr = x.astype(np.float16).astype(np.float64)
        ref = x.astype(np.float64) + (_low_rank_ref(xr, round16(p), act) - xr)  # residual in the input dtype
    else:
        ref = _low_rank_ref(x.astype(np.float64), p, act)
    np.testing.assert_allclose(to_f64(out), ref, rtol=tol, atol=tol * np.abs(ref).max())


DENSE_CASES = [  # id, dense activation, adapter activation, input shape, reduction factor, compute dtype, tol
    ("relu-gelu-3d-fp16", "relu", "gelu", (2, 3, CIN), RF, ms.float16, 1e-2),
    ("none-relu-2d-fp32-rf3", None, "relu", (4, CIN), 3, ms.float32, 1e-5),
    ("gelu-gelu-1d-fp32-rf8", "gelu", "gelu", (CIN,), 8, ms.float32, 1e-5),
]


@pytest.mark.parametrize("act,non_lin,shape,rf,cdtype,tol", [c[1:] for c in DENSE_CASES],
                         ids=[c[0] for c in DENSE_CASES])
def test_low_rank_dense_forward_matches_float64_reference(mode, act, non_lin, shape, rf, cdtype, tol):
    dense = _randomise(LowRankAdapterDense(CIN, D, **_dense_inits(), activation=act, reduction_factor=rf,
                                           low_rank_size=R, non_linearity=non_lin, compute_dtype=cdtype))
    assert dense.low_rank_adapter.bottleneck_size == D // rf
    x = x_of(shape)
    out = dense(Tensor(x))
    assert out.shape == shape[:-1] + (D,) and out.dtype == ms.float32
    p = _params(dense)
    if cdtype == ms.float16:
        p, x = round16(p), x.astype(np.float16)
    ref = _low_rank_ref(dense_ref(x, p, act), p, non_lin)
    np.testing.assert_allclose(to_f64(out), ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("cdtype", [ms.float16, ms.float32], ids=["fp16", "fp32"])
def test_fresh_low_rank_adapter_leaves_the_output_unchanged(mode, cdtype):
    """At insertion LowRankAdapterLayer(h) == h bit for bit; LowRankAdapterDense equals nn.Dense."""
    x = x_of((2, 3, D))
    assert np.array_equal(LowRankAdapterLayer(D, RF, R, compute_dtype=cdtype)(Tensor(x)).asnumpy(), x)
    inits = _dense_inits()
    dense = LowRankAdapterDense(CIN, D, **inits, activation="relu", reduction_factor=RF, compute_dtype=cdtype)
    x = x_of((4, CIN))
    got = dense(Tensor(x)).asnumpy()
    if cdtype == ms.float32:
        assert np.array_equal(got, nn.Dense(CIN, D, **inits, activation="relu")(Tensor(x)).asnumpy())
    else:
        ref = dense_ref(x.astype(np.float16), round16(_params(dense)), "relu")
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
        assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # nothing added after the cast


def test_input_last_dim_mismatch_raises(mode):
    with pytest.raises(ValueError, match="hidden_size"):
        LowRankAdapterLayer(D, RF)(Tensor(x_of((2, D + 1))))
    with pytest.raises(ValueError, match="in_channels"):
        LowRankAdapterDense(CIN, D, reduction_factor=RF)(Tensor(x_of((2, CIN - 1))))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls,act", [(LowRankAdapterLayer, "gelu"), (LowRankAdapterDense, "relu")],
                         ids=["layer-gelu", "dense-relu"])
def test_gradients_match_central_differences(mode, cls, act):
    """Every delta parameter's gradient (and the input's) equals a float64 finite difference."""
    if cls is LowRankAdapterLayer:
        cell = _randomise(LowRankAdapterLayer(D, RF, R, non_linearity=act, compute_dtype=ms.float32))
        x = x_of((2, 3, D))
    else:
        cell = _randomise(LowRankAdapterDense(CIN, D, **_dense_inits(), activation="gelu", reduction_factor=RF,
                                              low_rank_size=R, non_linearity=act, compute_dtype=ms.float32))
        x = x_of((2, 3, CIN))
    dy = x_of(x.shape[:-1] + (D,), seed=3)
    layer = _layer_of(cell)
    weights = [getattr(layer, n) for n in DELTA]
    dx, grads = vjp(cell, weights, x, dy)
    p = _params(cell)
    p["x"] = x.astype(np.float64)

    def loss(q):
        h = q["x"] if cls is LowRankAdapterLayer else dense_ref(q["x"], q, "gelu")
        return float((_low_rank_ref(h, q, act) * dy).sum())

    assert_gradients(p, loss, DELTA + ("input",), KEYS + ("x",), list(grads) + [dx])


def test_fresh_low_rank_adapter_gradient_flow():
    """At insertion W_up_right and b_up have gradients (W_up_left is non-zero); after one step, all do."""
    ms.set_context(mode=ms.GRAPH_MODE)
    layer = LowRankAdapterLayer(D, RF, R, compute_dtype=ms.float32)
    x, dy = Tensor(x_of((8, D))), x_of((8, D), seed=3)
    weights = [getattr(layer, n) for n in DELTA]
    g0 = weight_grads(layer, weights, x, dy)
    assert [bool(g.any()) for g in g0] == [False, False, False, False, True, True]
    g1 = grads_after_one_step(layer, weights, x, dy, g0)
    assert all(np.abs(g).max() > 1e-4 for g in g1), [np.abs(g).max() for g in g1]


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("cdtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_training_only_the_low_rank_adapter_lowers_the_loss(cdtype):
    """freeze_delta('low_rank_adapter') + a short Adam run: the loss falls, the Dense stays bit-identical."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(5)
    net = LowRankAdapterDense(CIN, D, **_dense_inits(), activation="relu", reduction_factor=RF, low_rank_size=R,
                              compute_dtype=cdtype)
    x = rng.standard_normal((32, CIN)).astype(np.float32)
    w = _params(net)
    h = np.maximum(x @ w["w"].T + w["b"], 0.0)
    y = (h + np.tanh(h @ rng.standard_normal((D, 1))) @ rng.standard_normal((1, D))).astype(np.float32)
    result = freeze_delta(net, "low_rank_adapter")
    assert result.frozen == ["weight", "bias"]
    assert [p.name for p in net.trainable_params()] == [f"low_rank_adapter.{n}" for n in DELTA]
    w0, b0 = net.weight.asnumpy().copy(), net.bias.asnumpy().copy()
    start = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 0.03))
    step.set_train()
    losses = [float(step(Tensor(x), Tensor(y)).asnumpy()) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.array_equal(net.weight.asnumpy(), w0) and np.array_equal(net.bias.asnumpy(), b0)
    for p in net.trainable_params():
        assert not np.array_equal(p.asnumpy(), start[p.name]), p.name


def test_freeze_modes_keep_adapter_and_low_rank_adapter_apart():
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.attn = AdapterDense(CIN, D, bottleneck_size=2)
            self.ffn = LowRankAdapterDense(D, D, reduction_factor=RF)
            self.head = nn.Dense(D, 2)

    net = Net()
    adapter = [f"attn.adapter.mindpet_delta_adapter_{n}" for n in ("down_weight", "down_bias", "up_weight", "up_bias")]
    low_rank = [f"ffn.low_rank_adapter.{n}" for n in DELTA]
    freeze_delta(net, "adapter")
    assert [p.name for p in net.trainable_params()] == adapter
    freeze_delta(net, "low_rank_adapter", exclude=["head.*"])
    assert [p.name for p in net.trainable_params()] == low_rank + ["head.weight", "head.bias"]
    freeze_delta(net, "Adapter")
    assert [p.name for p in net.trainable_params()] == adapter


# ----------------------------------------------------------------------------- argument errors
COMMON_ERRORS = [
    ("reduction_factor", 2.0, TypeError), ("reduction_factor", "2", TypeError), ("reduction_factor", True, TypeError),
    ("reduction_factor", 0, ValueError), ("reduction_factor", -2, ValueError),
    ("low_rank_size", 1.0, TypeError), ("low_rank_size", None, TypeError), ("low_rank_size", False, TypeError),
    ("low_rank_size", 0, ValueError), ("low_rank_size", -1, ValueError),
    ("low_rank_w_init", wrong((D, 1)), TypeError), ("low_rank_w_init", 0.5, TypeError),
    ("low_rank_w_init", None, TypeError), ("low_rank_w_init", XavierUniform, TypeError),
    ("low_rank_w_init", "no_such_init", ValueError),
    ("reduction_factor", D + 1, ValueError),  # K = D // reduction_factor would be 0
] + ADAPTER_COMMON_ERRORS
LAYER_ERRORS = COMMON_ERRORS + [
    ("hidden_size", 8.0, TypeError), ("hidden_size", None, TypeError), ("hidden_size", True, TypeError),
    ("hidden_size", 0, ValueError), ("hidden_size", -8, ValueError),
]
DENSE_ERRORS = COMMON_ERRORS + dense_errors(D, CIN)


@pytest.mark.parametrize("arg,value,exc", LAYER_ERRORS, ids=case_ids(LAYER_ERRORS))
def test_low_rank_layer_bad_argument_raises_naming_it(arg, value, exc):
    assert_bad_argument_raises(LowRankAdapterLayer, dict(hidden_size=D, reduction_factor=RF), arg, value, exc)


@pytest.mark.parametrize("arg,value,exc", DENSE_ERRORS, ids=case_ids(DENSE_ERRORS))
def test_low_rank_dense_bad_argument_raises_naming_it(arg, value, exc):
    assert_bad_argument_raises(LowRankAdapterDense, dict(in_channels=CIN, out_channels=D, reduction_factor=RF), arg,
                               value, exc)


def test_reduction_factor_bound_names_the_size_argument():
    with pytest.raises(ValueError, match="'reduction_factor'.*'hidden_size'"):
        LowRankAdapterLayer(4, 5)
    with pytest.raises(ValueError, match="'reduction_factor'.*'out_channels'"):
        LowRankAdapterDense(64, 4, reduction_factor=5)
    assert LowRankAdapterLayer(4, 4).bottleneck_size == 1  # equal is allowed
    assert LowRankAdapterDense(64, 4, reduction_factor=4, low_rank_size=8).low_rank_adapter.bottleneck_size == 1


# ----------------------------------------------------------------------------- shard
LAYER_STRATEGIES = {  # strategy argument -> (attribute of the primitive, a distinct valid strategy)
    "strategy_matmul_down_sampler_input": ("matmul_down_sampler_input", ((2, 1), (1, 1))),
    "strategy_matmul_down_sampler_weight": ("matmul_down_sampler_weight", ((4, 1), (1, 1))),
    "strategy_bias_down_sampler": ("bias_add_down_sampler", ((2, 2), (2,))),
    "strategy_matmul_up_sampler_input": ("matmul_up_sampler_input", ((8, 1), (1, 1))),
    "strategy_matmul_up_sampler_weight": ("matmul_up_sampler_weight", ((1, 1), (1, 1))),
    "strategy_bias_up_sampler": ("bias_add_up_sampler", ((2, 4), (4,))),
    "strategy_residual_add": ("residual_add", ((2, 1), (2, 1))),
}
def _check_layer_strategies(layer, non_lin_strategy):
    for arg, (attr, strategy) in LAYER_STRATEGIES.items():
        prim = getattr(layer, attr)
        assert layer._primitives[attr] is prim, attr  # pylint: disable=protected-access
        assert isinstance(prim, ops.MatMul if "matmul" in attr else (ops.BiasAdd, ops.Add)), attr
        assert strategy_of(prim) == strategy, arg
    prims = [getattr(layer, attr) for attr, _ in LAYER_STRATEGIES.values()]
    assert len({id(p) for p in prims}) == len(prims)  # each strategy has its own primitive
    prim = layer.non_linearity.activation  # 'gelu' resolves to a Cell holding ops.GeLU
    assert isinstance(prim, ops.GeLU) and strategy_of(prim) == non_lin_strategy


def test_matmul_order_never_materialises_the_projection(monkeypatch):
    """'*_input' matmuls take the activations and the left factor, '*_weight' ones the (N, r) product and
    the right factor: no (d, k) or (k, d) matrix is ever formed. This instruments the composed primitives
    (backend pinned); the fused op's order is the kernel contract's, tested in tests/kernels."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    layer = _randomise(LowRankAdapterLayer(D, RF, R, compute_dtype=ms.float32, backend="composed"))
    seen = {}
    for attr in ("matmul_down_sampler_input", "matmul_down_sampler_weight", "matmul_up_sampler_input",
                 "matmul_up_sampler_weight"):
        prim = getattr(layer, attr)
        assert isinstance(prim, ops.MatMul) and not prim.transpose_a and not prim.transpose_b

        def record(a, b, prim=prim, attr=attr):
            seen[attr] = (tuple(a.shape), tuple(b.shape))
            return prim(a, b)
        monkeypatch.setitem(layer.__dict__, attr, record)
    x = x_of((2, 3, D))
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), _low_rank_ref(x, _params(layer)), rtol=1e-5, atol=1e-5)
    assert seen == {"matmul_down_sampler_input": ((6, D), (D, R)), "matmul_down_sampler_weight": ((6, R), (R, K)),
                    "matmul_up_sampler_input": ((6, K), (K, R)), "matmul_up_sampler_weight": ((6, R), (R, D))}
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("alias", [False, True], ids=["residual", "residential-alias"])
def test_low_rank_layer_shard_attaches_each_strategy_to_its_primitive(alias):
    layer = LowRankAdapterLayer(D, RF, R)
    kwargs = {arg: s for arg, (_, s) in LAYER_STRATEGIES.items()}
    if alias:
        kwargs["strategy_residential_add"] = kwargs.pop("strategy_residual_add")
    assert layer.shard(**kwargs, strategy_non_linearity=((2, 4),)) is layer
    _check_layer_strategies(layer, ((2, 4),))


def test_low_rank_dense_shard_documented_example_and_own_primitives():
    dense = LowRankAdapterDense(CIN, D, activation="relu", reduction_factor=RF, low_rank_size=R)
    kwargs = {arg: s for arg, (_, s) in {**LAYER_STRATEGIES, **DENSE_STRATEGIES}.items()}
    assert dense.shard(**kwargs, strategy_activation_org=((1, 8),), strategy_non_linearity=((2, 4),)) is dense
    _check_layer_strategies(dense.low_rank_adapter, ((2, 4),))
    check_dense_strategies(dense)
    example = LowRankAdapterDense(in_channels=16, out_channels=32, reduction_factor=8)  # the spec's call
    example.shard(strategy_matmul_org=((2, 4), (1, 4)), strategy_bias_org=((2, 1), (1,)),
                  strategy_activation_org=((2, 1),), strategy_matmul_down_sampler_weight=((1, 1), (1, 1)),
                  strategy_matmul_down_sampler_input=((2, 1), (1, 1)), strategy_bias_down_sampler=((2, 1), (1,)),
                  strategy_non_linearity=((2, 1),), strategy_matmul_up_sampler_weight=((1, 1), (1, 1)),
                  strategy_matmul_up_sampler_input=((2, 1), (1, 1)), strategy_bias_up_sampler=((2, 1), (1,)),
                  strategy_residual_add=((2, 1), (2, 1)))
    lra = example.low_rank_adapter
    assert strategy_of(lra.matmul_down_sampler_input) == ((2, 1), (1, 1))
    assert strategy_of(lra.matmul_down_sampler_weight) == ((1, 1), (1, 1))
    assert strategy_of(lra.residual_add) == ((2, 1), (2, 1)) and strategy_of(example.matmul) == ((2, 4), (1, 4))
    partial = LowRankAdapterLayer(D, RF).shard(strategy_matmul_up_sampler_weight=((2, 1), (1, 1)))
    assert strategy_of(partial.matmul_up_sampler_weight) == ((2, 1), (1, 1))
    assert all(strategy_of(getattr(partial, a)) is None for a, _ in LAYER_STRATEGIES.values()
               if a != "matmul_up_sampler_weight")


BAD_STRATEGIES = [
    ("strategy_matmul_down_sampler_weight", [(1, 1), (1, 1)], TypeError),
    ("strategy_matmul_down_sampler_input", ((2, 1),), ValueError),
    ("strategy_bias_down_sampler", ((2, 1), (1, 1)), ValueError),
    ("strategy_non_linearity", ((0, 1),), ValueError),
    ("strategy_matmul_up_sampler_weight", (2, 1), TypeError),
    ("strategy_matmul_up_sampler_input", ((2, 1, 1), (1, 1)), ValueError),
    ("strategy_bias_up_sampler", ((2, 1), (-1,)), ValueError),
    ("strategy_residual_add", ((2, 1), (2, 1), (2, 1)), ValueError),
    ("strategy_residential_add", ((2, None), (2, 1)), ValueError),
    ("strategy_matmul_org", ((2, 4, 1), (1, 4)), ValueError),
    ("strategy_bias_org", "dp", TypeError),
    ("strategy_activation_org", ((2, 0),), ValueError),
]


@pytest.mark.parametrize("arg,value,exc", BAD_STRATEGIES,
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD_STRATEGIES)])
def test_shard_rejects_bad_strategy_before_attaching_any(arg, value, exc):
    cells = [LowRankAdapterDense(CIN, D, activation="relu", reduction_factor=RF)]
    if not arg.endswith("_org"):
        cells.append(LowRankAdapterLayer(D, RF))
    anchor = "matmul_down_sampler_weight" if arg.endswith("up_sampler_input") else "matmul_up_sampler_input"
    for cell in cells:  # a valid strategy for `anchor` is given too: it must not be attached either
        with pytest.raises(exc) as info:
            cell.shard(**{f"strategy_{anchor}": ((2, 1), (1, 1)), arg: value})
        name = "strategy_residual_add" if arg == "strategy_residential_add" else arg
        assert f"'{name}'" in str(info.value) and type(cell).__name__ in str(info.value)
        assert strategy_of(getattr(_layer_of(cell), anchor)) is None


def test_shard_residual_and_alias_together_raise():
    with pytest.raises(ValueError, match="strategy_residential_add"):
        LowRankAdapterDense(CIN, D).shard(strategy_residual_add=((2, 1), (2, 1)),
                                          strategy_residential_add=((2, 1), (2, 1)))


@pytest.mark.parametrize("pmode", ["semi_auto_parallel", "auto_parallel"])
def test_shard_log_softmax_rejected_in_auto_parallel(parallel_mode, pmode):
    LowRankAdapterLayer(D, RF, non_linearity="logsoftmax").shard(strategy_residual_add=((2, 1), (2, 1)))
    cells = [(LowRankAdapterLayer(D, RF, non_linearity="logsoftmax"), "non_linearity"),
             (LowRankAdapterDense(CIN, D, activation="logsoftmax", reduction_factor=RF), "activation"),
             (LowRankAdapterDense(CIN, D, activation=ops.LogSoftmax(), reduction_factor=RF), "activation"),
             (LowRankAdapterDense(CIN, D, reduction_factor=RF, non_linearity="logsoftmax"), "non_linearity")]
    check_log_softmax_rejected(parallel_mode, pmode, cells, _layer_of)
    LowRankAdapterDense(CIN, D, activation="relu", reduction_factor=RF).shard(strategy_activation_org=((2, 1),))


# ----------------------------------------------------------------------------- checkpoints
class _Classifier(nn.Cell):
    def __init__(self):
        super().__init__()
        self.encoder = LowRankAdapterDense(CIN, D, **_dense_inits(), activation="relu", reduction_factor=RF,
                                           low_rank_size=R, compute_dtype=ms.float32)
        self.head = nn.Dense(D, 3)

    def construct(self, x):
        return self.head(self.encoder(x))


def test_trainable_checkpoint_round_trip(tmp_path):
    """Model.train with TrainableParamsCheckPoint saves only the low-rank adapter (+ head); the
    pre-trained file plus that delta file reproduce the fine-tuned outputs in a fresh network."""
    ms.set_context(mode=ms.GRAPH_MODE)
    net = _Classifier()
    pretrained = save_pretrained(net, str(tmp_path / "pretrained.ckpt"))
    freeze_delta(net, "low_rank_adapter", exclude=["head.*"])
    x, data = regression_data(CIN)
    callback = TrainableParamsCheckPoint(str(tmp_path / "delta"), prefix="lra",
                                         config=CheckpointConfig(save_checkpoint_steps=2, keep_checkpoint_max=1))
    Model(net, nn.MSELoss(), nn.Adam(net.trainable_params(), 0.05)).train(1, data, callbacks=[callback],
                                                                          dataset_sink_mode=False)
    path = callback.latest_ckpt_file_name
    assert os.listdir(tmp_path / "delta") == ["lra-1_4.ckpt"] and path.endswith("lra-1_4.ckpt")
    expected = [f"encoder.low_rank_adapter.{n}" for n in DELTA] + ["head.weight", "head.bias"]
    saved = assert_saved_trainables(path, net, expected)
    assert np.abs(saved[f"encoder.low_rank_adapter.{DELTA[4]}"].asnumpy()).max() > 0  # up_right was trained

    assert_reload_reproduces(_Classifier(), net, pretrained, path, x)
