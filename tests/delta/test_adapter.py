"""AdapterLayer and AdapterDense (spec section 3): values, identity at insertion, gradients, training,
argument errors, shard strategies, freezing and trainable-only checkpoints."""
import inspect
import math
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.train import CheckpointConfig, Model

from mindpet.delta import AdapterDense, AdapterLayer
from mindpet.graph import TrainableParamsCheckPoint, freeze_delta
from adapter_helpers import (ACT, ADAPTER_COMMON_ERRORS, DENSE_STRATEGIES, assert_bad_argument_raises,
                             assert_gradients, assert_reload_reproduces, assert_saved_trainables, case_ids,
                             check_backend_kw, check_dense_strategies, check_log_softmax_rejected,
                             dense_and_delta_params, dense_errors, dense_inits, dense_ref, grads_after_one_step,
                             layer_cases, randomise, regression_data, round16, save_pretrained, strategy_of,
                             to_f64, vjp, weight_grads, x_of)
from adapter_helpers import parallel_mode  # a fixture  # noqa: F401  pylint: disable=unused-import

D, K = 6, 3           # hidden size, bottleneck size
CIN = 5               # AdapterDense input size (out_channels = D)
DELTA = ("mindpet_delta_adapter_down_weight", "mindpet_delta_adapter_down_bias",
         "mindpet_delta_adapter_up_weight", "mindpet_delta_adapter_up_bias")
KEYS = ("wd", "bd", "wu", "bu")


# ----------------------------------------------------------------------------- numpy references
def _adapter_ref(h, p, act="gelu"):
    """h + act(h Wd^T + bd) Wu^T + bu in float64, for h of shape (*, d)."""
    h2 = np.asarray(h, np.float64).reshape(-1, h.shape[-1])
    y = h2 + ACT[act](h2 @ p["wd"].T + p["bd"]) @ p["wu"].T + p["bu"]
    return y.reshape(h.shape)


def _adapter_of(cell):
    return cell.adapter if isinstance(cell, AdapterDense) else cell


def _params(cell):
    return dense_and_delta_params(cell, _adapter_of(cell), KEYS, DELTA)


def _randomise(cell, seed=7, scale=0.5):
    """Give every adapter parameter (the zero-initialised ones too) random non-zero values."""
    randomise(_adapter_of(cell), DELTA, seed, scale)
    return cell


def _dense_inits(seed=1):
    return dense_inits(D, CIN, seed)


# ----------------------------------------------------------------------------- signature, names, inits
def test_signatures_and_defaults_match_spec():
    sig = inspect.signature(AdapterDense)
    assert list(sig.parameters) == ["in_channels", "out_channels", "weight_init", "bias_init", "has_bias",
                                    "activation", "bottleneck_size", "non_linearity", "param_init_type",
                                    "compute_dtype", "backend", "transpose_b", "base"]
    check_backend_kw(sig)
    assert sig.parameters["transpose_b"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["base"].kind is inspect.Parameter.KEYWORD_ONLY and sig.parameters["base"].default is None
    d = {k: v.default for k, v in sig.parameters.items()}
    assert d["transpose_b"] is True
    assert (d["weight_init"], d["bias_init"], d["has_bias"], d["activation"]) == ("normal", "zeros", True, None)
    assert (d["bottleneck_size"], d["non_linearity"]) == (64, "gelu")
    assert d["param_init_type"] == ms.float32 and d["compute_dtype"] == ms.float16
    sig = inspect.signature(AdapterLayer)
    assert list(sig.parameters) == ["hidden_size", "bottleneck_size", "non_linearity", "param_init_type",
                                    "compute_dtype", "backend"]
    check_backend_kw(sig)
    d = {k: v.default for k, v in sig.parameters.items()}
    assert (d["bottleneck_size"], d["non_linearity"]) == (64, "gelu")
    assert d["param_init_type"] == ms.float32 and d["compute_dtype"] == ms.float16


def test_parameter_names_shapes_dtypes_and_inits():
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.ffn = AdapterDense(CIN, 64, bottleneck_size=8, param_init_type=ms.float16)
            self.post = AdapterLayer(64, 8)

    net = Net()
    names = [n for n, _ in net.parameters_and_names()]
    assert names == ["ffn.weight", "ffn.bias"] + [f"ffn.adapter.{n}" for n in DELTA] + [f"post.{n}" for n in DELTA]
    assert [p.name for p in net.get_parameters()] == names
    a = net.ffn.adapter
    assert a.mindpet_delta_adapter_down_weight.shape == (8, 64) and a.mindpet_delta_adapter_down_bias.shape == (8,)
    assert a.mindpet_delta_adapter_up_weight.shape == (64, 8) and a.mindpet_delta_adapter_up_bias.shape == (64,)
    assert all(p.dtype == ms.float16 for p in net.ffn.get_parameters())
    assert all(p.dtype == ms.float32 for p in net.post.get_parameters())
    wd = net.post.mindpet_delta_adapter_down_weight.asnumpy()
    assert np.abs(wd).max() <= 1 / math.sqrt(64) and wd.std() > 0.03  # HeUniform(sqrt 5): U(+-1/sqrt(d))
    for name in DELTA[1:]:  # down bias, up weight, up bias start at zero
        assert not getattr(net.post, name).asnumpy().any(), name
    assert 0.005 < net.ffn.weight.asnumpy().astype(np.float32).std() < 0.02  # 'normal': sigma 0.01
    assert AdapterDense(CIN, D, has_bias=False).bias is None


# ----------------------------------------------------------------------------- forward values
LAYER_CASES = layer_cases(D)


@pytest.mark.parametrize("act,shape,x_dtype,pdtype,cdtype,tol", [c[1:] for c in LAYER_CASES],
                         ids=[c[0] for c in LAYER_CASES])
def test_adapter_layer_forward_matches_float64_reference(mode, act, shape, x_dtype, pdtype, cdtype, tol):
    layer = _randomise(AdapterLayer(D, K, act, param_init_type=pdtype, compute_dtype=cdtype))
    x = x_of(shape).astype(x_dtype)
    out = layer(Tensor(x))
    assert out.shape == shape and out.dtype == Tensor(x).dtype
    p = _params(layer)
    xr = x.astype(np.float64)
    if cdtype == ms.float16:
        p, xr = round16(p), x.astype(np.float16).astype(np.float64)
        ref = x.astype(np.float64) + (_adapter_ref(xr, p, act) - xr)  # residual added in the input dtype
    else:
        ref = _adapter_ref(xr, p, act)
    np.testing.assert_allclose(to_f64(out), ref, rtol=tol, atol=tol * np.abs(ref).max())


DENSE_CASES = [  # id, dense activation, adapter activation, input shape, compute dtype, tolerance
    ("relu-gelu-3d-fp16", "relu", "gelu", (2, 3, CIN), ms.float16, 1e-2),
    ("none-relu-2d-fp32", None, "relu", (4, CIN), ms.float32, 1e-5),
    ("gelu-gelu-1d-fp32", "gelu", "gelu", (CIN,), ms.float32, 1e-5),
]


@pytest.mark.parametrize("act,non_lin,shape,cdtype,tol", [c[1:] for c in DENSE_CASES],
                         ids=[c[0] for c in DENSE_CASES])
def test_adapter_dense_forward_matches_float64_reference(mode, act, non_lin, shape, cdtype, tol):
    dense = _randomise(AdapterDense(CIN, D, **_dense_inits(), activation=act, bottleneck_size=K,
                                    non_linearity=non_lin, compute_dtype=cdtype))
    x = x_of(shape)
    out = dense(Tensor(x))
    assert out.shape == shape[:-1] + (D,) and out.dtype == ms.float32
    p = _params(dense)
    if cdtype == ms.float16:
        p, x = round16(p), x.astype(np.float16)
    ref = _adapter_ref(dense_ref(x, p, act), p, non_lin)
    np.testing.assert_allclose(to_f64(out), ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("cdtype", [ms.float16, ms.float32], ids=["fp16", "fp32"])
def test_fresh_adapter_leaves_the_output_unchanged(mode, cdtype):
    """At insertion AdapterLayer(h) == h bit for bit, and AdapterDense equals nn.Dense with its weights."""
    x = x_of((2, 3, D))
    layer = AdapterLayer(D, K, compute_dtype=cdtype)
    assert np.array_equal(layer(Tensor(x)).asnumpy(), x)
    inits = _dense_inits()
    dense = AdapterDense(CIN, D, **inits, activation="relu", bottleneck_size=K, compute_dtype=cdtype)
    base = nn.Dense(CIN, D, **inits, activation="relu")
    x = x_of((4, CIN))
    got = dense(Tensor(x)).asnumpy()
    if cdtype == ms.float32:
        assert np.array_equal(got, base(Tensor(x)).asnumpy())
    else:  # the dense part alone, computed in float16
        p = round16(_params(dense))
        ref = dense_ref(x.astype(np.float16), p, "relu")
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
        assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # nothing added after the cast


def test_input_last_dim_mismatch_raises(mode):
    with pytest.raises(ValueError, match="hidden_size"):
        AdapterLayer(D, K)(Tensor(x_of((2, D + 1))))
    with pytest.raises(ValueError, match="in_channels"):
        AdapterDense(CIN, D, bottleneck_size=K)(Tensor(x_of((2, CIN + 1))))


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls,act", [(AdapterLayer, "gelu"), (AdapterDense, "relu")], ids=["layer-gelu", "dense-relu"])
def test_gradients_match_central_differences(mode, cls, act):
    """Every delta parameter's gradient (and the input's) equals a float64 finite difference."""
    if cls is AdapterLayer:
        cell = _randomise(AdapterLayer(D, K, act, compute_dtype=ms.float32))
        x = x_of((2, 3, D))
    else:
        cell = _randomise(AdapterDense(CIN, D, **_dense_inits(), activation="gelu", bottleneck_size=K,
                                       non_linearity=act, compute_dtype=ms.float32))
        x = x_of((2, 3, CIN))
    dy = x_of(x.shape[:-1] + (D,), seed=3)
    a = _adapter_of(cell)
    weights = [getattr(a, n) for n in DELTA]
    dx, grads = vjp(cell, weights, x, dy)
    p = _params(cell)
    p["x"] = x.astype(np.float64)

    def loss(q):
        h = q["x"] if cls is AdapterLayer else dense_ref(q["x"], q, "gelu")
        return float((_adapter_ref(h, q, act) * dy).sum())

    assert_gradients(p, loss, DELTA + ("input",), KEYS + ("x",), list(grads) + [dx])


def test_fresh_adapter_gradient_flow():
    """At insertion only the up projection has a gradient; after one step every delta parameter has one."""
    ms.set_context(mode=ms.GRAPH_MODE)
    layer = AdapterLayer(D, K, compute_dtype=ms.float32)
    x, dy = Tensor(x_of((8, D))), x_of((8, D), seed=3)
    weights = [getattr(layer, n) for n in DELTA]
    g0 = weight_grads(layer, weights, x, dy)
    assert not g0[0].any() and not g0[1].any()  # W_up = 0 blocks the down projection's gradient
    assert np.abs(g0[2]).max() > 1e-3 and np.abs(g0[3]).max() > 1e-3
    g1 = grads_after_one_step(layer, weights, x, dy, g0)
    assert all(np.abs(g).max() > 1e-4 for g in g1), [np.abs(g).max() for g in g1]


# ----------------------------------------------------------------------------- training
class _Backbone(nn.Cell):
    """A frozen "pre-trained" Dense with an AdapterLayer after it, then a trainable head."""

    def __init__(self, compute_dtype):
        super().__init__()
        self.dense = nn.Dense(CIN, D, **_dense_inits())
        self.adapter_layer = AdapterLayer(D, K, compute_dtype=compute_dtype)
        self.head = nn.Dense(D, 2)

    def construct(self, x):
        return self.head(self.adapter_layer(self.dense(x)))


def _teacher_data(n=32, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, CIN)).astype(np.float32)
    return x, rng


@pytest.mark.parametrize("kind", ["dense-fp32", "layer-fp16"])
def test_training_only_the_adapter_lowers_the_loss(kind):
    """freeze_delta('adapter') + a short Adam run: the loss falls, frozen weights stay bit-identical."""
    ms.set_context(mode=ms.GRAPH_MODE)
    x, rng = _teacher_data()
    if kind == "dense-fp32":
        net = AdapterDense(CIN, D, **_dense_inits(), activation="relu", bottleneck_size=K, compute_dtype=ms.float32)
        w = _params(net)
        h = np.maximum(x @ w["w"].T + w["b"], 0.0)
        y = h + np.tanh(h @ rng.standard_normal((D, D)) * 0.5)  # a residual change the adapter can fit
        result = freeze_delta(net, "adapter")
        trainable = [f"adapter.{n}" for n in DELTA]
        assert result.frozen == ["weight", "bias"]
    else:
        net = _Backbone(ms.float16)
        y = rng.standard_normal((len(x), 2))
        result = freeze_delta(net, "adapter", exclude=["head.*"])
        trainable = [f"adapter_layer.{n}" for n in DELTA] + ["head.weight", "head.bias"]
        assert result.frozen == ["dense.weight", "dense.bias"]
    assert [p.name for p in net.trainable_params()] == trainable
    frozen = {p.name: p.asnumpy().copy() for p in net.get_parameters() if not p.requires_grad}
    start = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.Adam(net.trainable_params(), 0.02))
    step.set_train()
    xt, yt = Tensor(x), Tensor(y.astype(np.float32))
    losses = [float(step(xt, yt).asnumpy()) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0], losses
    for name, value in frozen.items():
        assert np.array_equal(net.parameters_dict()[name].asnumpy(), value), name
    for p in net.trainable_params():
        assert not np.array_equal(p.asnumpy(), start[p.name]), p.name


# ----------------------------------------------------------------------------- argument errors
COMMON_ERRORS = [  # errors both classes raise (the size argument is named per class below)
    ("bottleneck_size", 2.0, TypeError), ("bottleneck_size", "8", TypeError), ("bottleneck_size", True, TypeError),
    ("bottleneck_size", 0, ValueError), ("bottleneck_size", -4, ValueError),
] + ADAPTER_COMMON_ERRORS
LAYER_ERRORS = COMMON_ERRORS + [
    ("hidden_size", 6.0, TypeError), ("hidden_size", None, TypeError), ("hidden_size", False, TypeError),
    ("hidden_size", 0, ValueError), ("hidden_size", -1, ValueError),
]
DENSE_ERRORS = COMMON_ERRORS + dense_errors(D, CIN)


@pytest.mark.parametrize("arg,value,exc", LAYER_ERRORS, ids=case_ids(LAYER_ERRORS))
def test_adapter_layer_bad_argument_raises_naming_it(arg, value, exc):
    assert_bad_argument_raises(AdapterLayer, dict(hidden_size=D, bottleneck_size=K), arg, value, exc)


@pytest.mark.parametrize("arg,value,exc", DENSE_ERRORS, ids=case_ids(DENSE_ERRORS))
def test_adapter_dense_bad_argument_raises_naming_it(arg, value, exc):
    assert_bad_argument_raises(AdapterDense, dict(in_channels=CIN, out_channels=D, bottleneck_size=K), arg, value,
                               exc)


def test_good_edge_arguments_accepted():
    assert AdapterLayer(1, 1).hidden_size == 1
    assert AdapterLayer(4, 16).bottleneck_size == 16  # a wider "bottleneck" is allowed
    dense = AdapterDense(2, 3, weight_init=0.5, bias_init=1, bottleneck_size=1, non_linearity="RELU",
                         activation=ops.ReLU())
    assert np.all(dense.weight.asnumpy() == 0.5) and np.all(dense.bias.asnumpy() == 1.0)
    assert dense.weight.dtype == ms.float32
    dense = AdapterDense(2, 3, weight_init=Tensor(np.ones((3, 2)), ms.float64), bottleneck_size=1)
    assert dense.weight.dtype == ms.float32  # a Tensor init is cast to param_init_type


# ----------------------------------------------------------------------------- shard
LAYER_STRATEGIES = {  # strategy argument -> (attribute of the primitive, a distinct valid strategy)
    "strategy_matmul_down_sampler": ("matmul_down_sampler", ((2, 1), (1, 1))),
    "strategy_bias_down_sampler": ("bias_add_down_sampler", ((2, 3), (3,))),
    "strategy_matmul_up_sampler": ("matmul_up_sampler", ((4, 1), (1, 1))),
    "strategy_bias_up_sampler": ("bias_add_up_sampler", ((2, 2), (2,))),
    "strategy_residual_add": ("residual_add", ((8, 1), (8, 1))),
}
def _check_layer_strategies(layer, non_lin_strategy):
    for arg, (attr, strategy) in LAYER_STRATEGIES.items():
        prim = getattr(layer, attr)
        assert layer._primitives[attr] is prim, attr  # pylint: disable=protected-access
        assert strategy_of(prim) == strategy, arg
    prim = layer.non_linearity.activation  # 'gelu' resolves to a Cell holding ops.GeLU
    assert isinstance(prim, ops.GeLU) and strategy_of(prim) == non_lin_strategy


@pytest.mark.parametrize("alias", [False, True], ids=["residual", "residential-alias"])
def test_adapter_layer_shard_attaches_each_strategy_to_its_primitive(alias):
    layer = AdapterLayer(D, K)
    kwargs = {arg: s for arg, (_, s) in LAYER_STRATEGIES.items()}
    if alias:
        kwargs["strategy_residential_add"] = kwargs.pop("strategy_residual_add")
    assert layer.shard(**kwargs, strategy_non_linearity=((2, 4),)) is layer
    _check_layer_strategies(layer, ((2, 4),))


def test_adapter_dense_shard_documented_example_and_own_primitives():
    dense = AdapterDense(CIN, D, activation="relu", bottleneck_size=K)
    kwargs = {arg: s for arg, (_, s) in {**LAYER_STRATEGIES, **DENSE_STRATEGIES}.items()}
    kwargs["strategy_residential_add"] = kwargs.pop("strategy_residual_add")
    assert dense.shard(**kwargs, strategy_activation_org=((1, 8),), strategy_non_linearity=((2, 4),)) is dense
    _check_layer_strategies(dense.adapter, ((2, 4),))
    check_dense_strategies(dense)
    # the documented call verbatim (the layer has no activation: strategy_activation_org has no effect)
    example = AdapterDense(in_channels=8, out_channels=16, bottleneck_size=4)
    example.shard(strategy_matmul_org=((2, 4), (1, 4)), strategy_bias_org=((2, 1), (1,)),
                  strategy_activation_org=((2, 1),), strategy_matmul_down_sampler=((2, 1), (1, 1)),
                  strategy_bias_down_sampler=((2, 1), (1,)), strategy_non_linearity=((2, 1),),
                  strategy_matmul_up_sampler=((2, 1), (1, 1)), strategy_bias_up_sampler=((2, 1), (1,)),
                  strategy_residential_add=((2, 1), (2, 1)))
    assert strategy_of(example.adapter.residual_add) == ((2, 1), (2, 1))
    assert strategy_of(example.matmul) == ((2, 4), (1, 4))
    # primitives are distinct objects, so no strategy leaks to another
    partial = AdapterDense(CIN, D, bottleneck_size=K).shard(strategy_matmul_up_sampler=((2, 1), (1, 1)))
    assert strategy_of(partial.adapter.matmul_up_sampler) == ((2, 1), (1, 1))
    assert strategy_of(partial.adapter.matmul_down_sampler) is None and strategy_of(partial.matmul) is None


BAD_STRATEGIES = [
    ("strategy_matmul_down_sampler", [(2, 1), (1, 1)], TypeError),
    ("strategy_matmul_down_sampler", ((2, 1),), ValueError),
    ("strategy_bias_down_sampler", ((2, 1), (1, 1)), ValueError),
    ("strategy_non_linearity", ((0, 1),), ValueError),
    ("strategy_non_linearity", "data_parallel", TypeError),
    ("strategy_matmul_up_sampler", (2, 1), TypeError),
    ("strategy_bias_up_sampler", ((2, 1), (-1,)), ValueError),
    ("strategy_residual_add", ((2, 1), (2, 1), (2, 1)), ValueError),
    ("strategy_residential_add", ((2, 1.0), (2, 1)), ValueError),
    ("strategy_matmul_org", ((2, 4, 1), (1, 4)), ValueError),
    ("strategy_bias_org", ((2, True), (1,)), ValueError),
    ("strategy_activation_org", ((2, 1), None), TypeError),
]


@pytest.mark.parametrize("arg,value,exc", BAD_STRATEGIES,
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD_STRATEGIES)])
def test_shard_rejects_bad_strategy_before_attaching_any(arg, value, exc):
    cells = [AdapterDense(CIN, D, activation="relu", bottleneck_size=K)]
    if not arg.endswith("_org"):
        cells.append(AdapterLayer(D, K))
    for cell in cells:
        with pytest.raises(exc) as info:
            cell.shard(strategy_matmul_up_sampler=((2, 1), (1, 1)), **{arg: value})
        name = "strategy_residual_add" if arg == "strategy_residential_add" else arg
        assert f"'{name}'" in str(info.value) and type(cell).__name__ in str(info.value)
        assert strategy_of(_adapter_of(cell).matmul_up_sampler) is None


def test_shard_residual_and_alias_together_raise():
    with pytest.raises(ValueError, match="strategy_residential_add"):
        AdapterLayer(D, K).shard(strategy_residual_add=((2, 1), (2, 1)), strategy_residential_add=((2, 1), (2, 1)))


@pytest.mark.parametrize("pmode", ["semi_auto_parallel", "auto_parallel"])
def test_shard_log_softmax_rejected_in_auto_parallel(parallel_mode, pmode):
    AdapterLayer(D, K, "logsoftmax").shard(strategy_residual_add=((2, 1), (2, 1)))  # stand-alone: fine
    cells = [(AdapterLayer(D, K, "logsoftmax"), "non_linearity"),
             (AdapterDense(CIN, D, activation="logsoftmax", bottleneck_size=K), "activation"),
             (AdapterDense(CIN, D, activation=nn.LogSoftmax(), bottleneck_size=K), "activation"),
             (AdapterDense(CIN, D, bottleneck_size=K, non_linearity="logsoftmax"), "non_linearity")]
    check_log_softmax_rejected(parallel_mode, pmode, cells, _adapter_of)
    AdapterDense(CIN, D, activation="relu", bottleneck_size=K).shard(strategy_activation_org=((2, 1),))


# ----------------------------------------------------------------------------- checkpoints
class _Classifier(nn.Cell):
    def __init__(self):
        super().__init__()
        self.encoder = AdapterDense(CIN, D, **_dense_inits(), activation="relu", bottleneck_size=K,
                                    compute_dtype=ms.float32)
        self.head = nn.Dense(D, 3)

    def construct(self, x):
        return self.head(self.encoder(x))


def test_trainable_checkpoint_round_trip(tmp_path):
    """Model.train with TrainableParamsCheckPoint saves only the adapter (+ head); loading the
    pre-trained file and that delta file into a fresh network reproduces the fine-tuned outputs."""
    ms.set_context(mode=ms.GRAPH_MODE)
    net = _Classifier()
    pretrained = save_pretrained(net, str(tmp_path / "pretrained.ckpt"))
    assert sorted(ms.load_checkpoint(pretrained)) == ["encoder.bias", "encoder.weight", "head.bias", "head.weight"]
    freeze_delta(net, "adapter", exclude=["head.*"])
    x, data = regression_data(CIN)
    callback = TrainableParamsCheckPoint(str(tmp_path / "delta"), prefix="adapter",
                                         config=CheckpointConfig(save_checkpoint_steps=4))
    Model(net, nn.MSELoss(), nn.Adam(net.trainable_params(), 0.05)).train(1, data, callbacks=[callback],
                                                                   dataset_sink_mode=False)
    path = callback.latest_ckpt_file_name
    assert path is not None and os.path.isfile(path) and os.path.basename(path) == "adapter-1_4.ckpt"
    expected = [f"encoder.adapter.{n}" for n in DELTA] + ["head.weight", "head.bias"]
    saved = assert_saved_trainables(path, net, expected)
    assert np.abs(saved[f"encoder.adapter.{DELTA[2]}"].asnumpy()).max() > 0  # the adapter was trained

    assert_reload_reproduces(_Classifier(), net, pretrained, path, x)
    assert not np.array_equal(_Classifier()(Tensor(x)).asnumpy(), net(Tensor(x)).asnumpy())
