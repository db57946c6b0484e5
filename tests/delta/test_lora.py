"""LoRADense (spec section 1.2): values, gradients, training, dropout, errors, shard, checkpoints."""
import inspect
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeUniform

from mindpet.delta import LoRADense

CIN, COUT, RANK, ALPHA = 5, 4, 3, 6.0
SCALE = ALPHA / RANK
LORA_PARAMS = ("mindpet_delta_lora_a", "mindpet_delta_lora_b")


# ----------------------------------------------------------------------------- numpy references
def _gelu_tanh(y):
    return 0.5 * y * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (y + 0.044715 * y ** 3)))


ACTIVATIONS = {None: lambda y: y, "relu": lambda y: np.maximum(y, 0.0), "gelu": _gelu_tanh}


def _bf16(a):
    """Round float32 values to the nearest bfloat16 (ties to even), returned as float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def _np(t):
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


def _params(layer):
    """The layer's parameters as float64 arrays (bias None without bias)."""
    return {"W": _np(layer.weight), "b": None if layer.bias is None else _np(layer.bias),
            "A": _np(layer.mindpet_delta_lora_a), "B": _np(layer.mindpet_delta_lora_b)}


def _reference(x, p, act=None, scale=SCALE):
    """activation(x W^T + b + s x A^T B^T) in float64, for x of shape (*, in)."""
    x2 = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    y = x2 @ p["W"].T + (0.0 if p["b"] is None else p["b"]) + scale * (x2 @ p["A"].T) @ p["B"].T
    return ACTIVATIONS[act](y).reshape(x.shape[:-1] + (p["W"].shape[0],))


def _inits(seed=1, cin=CIN, cout=COUT, rank=RANK):
    rng = np.random.default_rng(seed)
    return {"weight_init": Tensor(rng.standard_normal((cout, cin)).astype(np.float32) * 0.5),
            "bias_init": Tensor(rng.standard_normal((cout,)).astype(np.float32)),
            "lora_a_init": Tensor(rng.standard_normal((rank, cin)).astype(np.float32) * 0.5),
            "lora_b_init": Tensor(rng.standard_normal((cout, rank)).astype(np.float32) * 0.5)}


def _layer(dropout=0.0, compute=ms.float32, **kw):
    args = dict(_inits(), compute_dtype=compute)
    args.update(kw)
    return LoRADense(CIN, COUT, RANK, ALPHA, dropout, **args)


def _x(shape, seed=2):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- signature, names, inits
def test_signature_defaults_match_spec():
    sig = inspect.signature(LoRADense)
    # the spec's arguments in order, then the keyword-only kernel backend choice, weight layout and quantised base
    assert list(sig.parameters) == [
        "in_channels", "out_channels", "lora_rank", "lora_alpha", "lora_dropout", "lora_a_init",
        "lora_b_init", "param_init_type", "compute_dtype", "weight_init", "bias_init", "has_bias", "activation",
        "backend", "transpose_b", "base"]
    assert sig.parameters["base"].kind is inspect.Parameter.KEYWORD_ONLY and sig.parameters["base"].default is None
    assert sig.parameters["backend"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["backend"].default is None
    assert sig.parameters["transpose_b"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["transpose_b"].default is True
    d = {k: v.default for k, v in sig.parameters.items()}
    assert isinstance(d["lora_a_init"], HeUniform) and d["lora_a_init"].negative_slope == pytest.approx(math.sqrt(5))
    assert d["lora_b_init"] == "zero" and d["weight_init"] == "normal" and d["bias_init"] == "zeros"
    assert d["param_init_type"] == ms.float32 and d["compute_dtype"] == ms.float16
    assert d["has_bias"] is True and d["activation"] is None


def test_default_parameters_shapes_dtypes_and_inits():
    layer = LoRADense(64, 8, 4, 8, 0.1)
    assert layer.weight.shape == (8, 64) and layer.bias.shape == (8,)
    assert layer.mindpet_delta_lora_a.shape == (4, 64) and layer.mindpet_delta_lora_b.shape == (8, 4)
    assert all(p.dtype == ms.float32 for p in layer.get_parameters())
    a = layer.mindpet_delta_lora_a.asnumpy()
    assert np.abs(a).max() <= 1 / math.sqrt(64) and a.std() > 0.02  # HeUniform(sqrt 5): U(+-1/sqrt(in))
    assert not layer.mindpet_delta_lora_b.asnumpy().any() and not layer.bias.asnumpy().any()
    assert 0.005 < layer.weight.asnumpy().std() < 0.02  # 'normal': sigma 0.01
    assert layer.scaling == 2.0


def test_parameter_names_in_a_network():
    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.query = LoRADense(4, 4, 2, 4, 0.0)
            self.head = nn.Dense(4, 2)

    names = [n for n, _ in Net().parameters_and_names()]
    assert names == ["query.weight", "query.bias", "query.mindpet_delta_lora_a", "query.mindpet_delta_lora_b",
                     "head.weight", "head.bias"]
    layer = LoRADense(4, 4, 2, 4, 0.0, has_bias=False)
    assert layer.bias is None and [p.name for p in layer.get_parameters()] == ["weight", *LORA_PARAMS]


# ----------------------------------------------------------------------------- forward values
FORWARD_CASES = [
    # id, has_bias, activation factory, input shape, input dtype, compute dtype, tolerance
    ("2d-bias-fp32", True, lambda: None, None, (6, CIN), np.float32, ms.float32, 1e-5),
    ("3d-nobias-relu-fp32", False, lambda: "relu", "relu", (2, 3, CIN), np.float32, ms.float32, 1e-5),
    ("3d-gelu-fp16", True, lambda: "gelu", "gelu", (2, 3, CIN), np.float32, ms.float16, 1e-2),
    ("4d-fp16-input-fp32-compute", True, nn.ReLU, "relu", (2, 1, 3, CIN), np.float16, ms.float32, 5e-3),
    ("1d-primitive-relu", True, ops.ReLU, "relu", (CIN,), np.float32, ms.float32, 1e-5),
]


@pytest.mark.parametrize("has_bias,act,act_ref,shape,x_dtype,compute,tol",
                         [c[1:] for c in FORWARD_CASES], ids=[c[0] for c in FORWARD_CASES])
def test_forward_matches_float64_reference(mode, has_bias, act, act_ref, shape, x_dtype, compute, tol):
    layer = _layer(compute=compute, has_bias=has_bias, activation=act())
    x = _x(shape).astype(x_dtype)
    out = layer(Tensor(x))
    assert out.shape == shape[:-1] + (COUT,)
    assert out.dtype == (ms.float16 if x_dtype == np.float16 else ms.float32)
    p = _params(layer)
    if compute == ms.float16:  # the operands are rounded to float16 before the matmuls
        x = x.astype(np.float16)
        p = {k: None if v is None else v.astype(np.float16).astype(np.float64) for k, v in p.items()}
    ref = _reference(x, p, act_ref)
    np.testing.assert_allclose(_np(out), ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_zero_lora_b_equals_plain_dense_formula():
    layer = _layer(lora_b_init="zero")
    x = _x((3, CIN))
    p = _params(layer)
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), x @ p["W"].T + p["b"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_dtype", [ms.float32, ms.bfloat16], ids=["fp32-input", "bf16-input"])
def test_bfloat16_is_emulated_on_cpu(mode, x_dtype):
    """bf16 params and compute on CPU: operands and output rounded to bf16, arithmetic in float32."""
    layer = _layer(compute=ms.bfloat16, param_init_type=ms.bfloat16, activation="relu")
    assert all(p.dtype == ms.bfloat16 for p in layer.get_parameters())
    x = _x((4, CIN))
    out = layer(Tensor(x).astype(x_dtype))
    assert out.dtype == x_dtype
    got = ops.cast(out, ms.float32).asnumpy()
    assert not (got.view(np.uint32) & 0xFFFF).any()  # every output value is a bfloat16 value
    p = _params(layer)  # already bfloat16 values
    xr = _bf16(x).astype(np.float64)
    base = _bf16(xr @ p["W"].T) + p["b"]
    delta = _bf16(_bf16(xr @ p["A"].T).astype(np.float64) @ p["B"].T)
    ref = _bf16(np.maximum(base + SCALE * delta, 0.0))
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=1e-2)


def test_input_last_dim_mismatch_raises(mode):
    layer = _layer()
    with pytest.raises(ValueError, match="in_channels"):
        layer(Tensor(_x((2, CIN + 1))))


# ----------------------------------------------------------------------------- gradients
class _Weighted(nn.Cell):
    """sum(layer(x) * dy): its gradient is the vector-Jacobian product with dy."""

    def __init__(self, layer, dy):
        super().__init__()
        self.layer = layer
        self.dy = Tensor(dy)

    def construct(self, x):
        return (self.layer(x) * self.dy).sum()


def test_gradients_match_analytic_formula(mode):
    layer = _layer()
    x = _x((2, 3, CIN))
    dy = np.random.default_rng(3).standard_normal((2, 3, COUT)).astype(np.float32)
    net = _Weighted(layer, dy)
    grad_fn = ms.grad(net, grad_position=0, weights=[layer.mindpet_delta_lora_a, layer.mindpet_delta_lora_b])
    dx, (da, db) = grad_fn(Tensor(x))
    p = _params(layer)
    x2, dy2 = x.reshape(-1, CIN).astype(np.float64), dy.reshape(-1, COUT).astype(np.float64)
    g = dy2 @ p["B"]                                       # (n, r)
    np.testing.assert_allclose(da.asnumpy(), SCALE * g.T @ x2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db.asnumpy(), SCALE * dy2.T @ (x2 @ p["A"].T), rtol=1e-5, atol=1e-5)
    dx_ref = dy2 @ p["W"] + SCALE * g @ p["A"]
    np.testing.assert_allclose(dx.asnumpy(), dx_ref.reshape(x.shape), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- training
def _freeze_base(layer):
    layer.weight.requires_grad = False
    if layer.bias is not None:
        layer.bias.requires_grad = False


def _train_step(net, lr, opt=nn.SGD):
    trainable = [p for p in net.get_parameters() if p.requires_grad]
    return nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt(trainable, learning_rate=lr))


def test_training_step_freezes_base_and_moves_lora(mode):
    layer = _layer(lora_b_init="zero", compute=ms.float16)  # the default compute dtype
    _freeze_base(layer)
    assert [p.name for p in layer.trainable_params()] == list(LORA_PARAMS)
    w0, b0, a0 = layer.weight.asnumpy().copy(), layer.bias.asnumpy().copy(), layer.mindpet_delta_lora_a.asnumpy().copy()
    step = _train_step(layer, 0.5)
    step.set_train()
    x, y = Tensor(_x((8, CIN))), Tensor(_x((8, COUT), seed=4))
    step(x, y)
    # B starts at zero, so dA = s (dy B)^T x is exactly zero in the first step; B moves.
    assert np.array_equal(layer.mindpet_delta_lora_a.asnumpy(), a0)
    assert np.abs(layer.mindpet_delta_lora_b.asnumpy()).max() > 1e-4
    step(x, y)
    assert np.abs(layer.mindpet_delta_lora_a.asnumpy() - a0).max() > 1e-6
    assert np.array_equal(layer.weight.asnumpy(), w0) and np.array_equal(layer.bias.asnumpy(), b0)


def test_lora_fine_tuning_lowers_loss():
    """A frozen Dense plus a rank-2 change is learned by the LoRA branch alone."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(5)
    cin, cout = 8, 6
    w0 = rng.standard_normal((cout, cin)).astype(np.float32) * 0.3
    b0 = rng.standard_normal(cout).astype(np.float32) * 0.1
    delta_w = rng.standard_normal((cout, 2)) @ rng.standard_normal((2, cin)) * 0.3
    x = rng.standard_normal((64, cin)).astype(np.float32)
    y = (x @ (w0 + delta_w).T + b0).astype(np.float32)
    layer = LoRADense(cin, cout, 4, 8, 0.0, weight_init=Tensor(w0), bias_init=Tensor(b0), compute_dtype=ms.float32)
    _freeze_base(layer)
    step = _train_step(layer, 0.03, nn.Adam)
    step.set_train()
    losses = [float(step(Tensor(x), Tensor(y)).asnumpy()) for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0], losses
    assert np.array_equal(layer.weight.asnumpy(), w0)


# ----------------------------------------------------------------------------- dropout
def test_dropout_only_in_training(mode):
    """With A = B = I the LoRA branch is s * dropout(x): each entry is 0 or x / (1 - p) in training."""
    n, p_drop = 8, 0.5
    eye = Tensor(np.eye(n, dtype=np.float32))
    rng = np.random.default_rng(6)
    layer = LoRADense(n, n, n, 2 * n, p_drop, lora_a_init=eye, lora_b_init=eye,
                      weight_init=Tensor(rng.standard_normal((n, n)).astype(np.float32)),
                      bias_init=Tensor(rng.standard_normal(n).astype(np.float32)), compute_dtype=ms.float32)
    x = _x((32, n)) + 3.0  # no zeros in x
    p = _params(layer)
    base = x @ p["W"].T + p["b"]
    eval_out = layer(Tensor(x)).asnumpy()
    np.testing.assert_allclose(eval_out, base + 2.0 * x, rtol=1e-5, atol=1e-5)
    layer.set_train(True)
    branch = (layer(Tensor(x)).asnumpy() - base) / 2.0
    layer.set_train(False)
    dropped = np.isclose(branch, 0.0, atol=1e-4)
    kept = np.isclose(branch, x / (1 - p_drop), rtol=1e-4, atol=1e-4)
    assert np.all(dropped | kept)
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(layer(Tensor(x)).asnumpy(), eval_out, rtol=1e-6)


# ----------------------------------------------------------------------------- argument errors
def _strategy(prim):
    """The strategy attached to a primitive (None when none was attached)."""
    return getattr(prim, "in_strategy", None)


def _wrong(shape):
    return Tensor(np.zeros(shape, np.float32))


ERROR_CASES = [
    # argument, bad value, expected exception
    ("in_channels", 5.0, TypeError), ("in_channels", True, TypeError), ("in_channels", 0, ValueError),
    ("in_channels", -2, ValueError),
    ("out_channels", "4", TypeError), ("out_channels", False, TypeError), ("out_channels", 0, ValueError),
    ("lora_rank", None, TypeError), ("lora_rank", True, TypeError), ("lora_rank", 2.0, TypeError),
    ("lora_rank", 0, ValueError), ("lora_rank", -1, ValueError),
    ("lora_alpha", "8", TypeError), ("lora_alpha", True, TypeError), ("lora_alpha", None, TypeError),
    ("lora_alpha", 0, ValueError), ("lora_alpha", 0.0, ValueError), ("lora_alpha", float("nan"), ValueError),
    ("lora_dropout", 0, TypeError), ("lora_dropout", "0.1", TypeError), ("lora_dropout", None, TypeError),
    ("lora_dropout", 1.0, ValueError), ("lora_dropout", -0.1, ValueError),
    ("has_bias", 1, TypeError), ("has_bias", "True", TypeError),
    ("activation", 1, TypeError), ("activation", object(), TypeError), ("activation", "no_such_act", ValueError),
    ("param_init_type", ms.int32, TypeError), ("param_init_type", "float32", TypeError),
    ("compute_dtype", ms.float64, TypeError), ("compute_dtype", np.float16, TypeError),
    ("lora_a_init", _wrong((RANK,)), ValueError), ("lora_a_init", _wrong((RANK + 1, CIN)), ValueError),
    ("lora_a_init", _wrong((RANK, CIN + 1)), ValueError), ("lora_a_init", [1.0], TypeError),
    ("lora_b_init", _wrong((COUT, RANK, 1)), ValueError), ("lora_b_init", _wrong((COUT + 1, RANK)), ValueError),
    ("lora_b_init", _wrong((COUT, RANK + 1)), ValueError), ("lora_b_init", "no_such_init", ValueError),
    ("weight_init", _wrong((COUT * CIN,)), ValueError), ("weight_init", _wrong((CIN, COUT)), ValueError),
    ("weight_init", _wrong((COUT, CIN + 1)), ValueError), ("weight_init", None, TypeError),
    ("bias_init", _wrong((COUT + 1,)), ValueError), ("bias_init", _wrong((1, COUT)), ValueError),
]


@pytest.mark.parametrize("arg,value,exc", ERROR_CASES,
                         ids=[f"{a}-{type(v).__name__}-{i}" for i, (a, v, _) in enumerate(ERROR_CASES)])
def test_bad_argument_raises_naming_it(arg, value, exc):
    kwargs = dict(in_channels=CIN, out_channels=COUT, lora_rank=RANK, lora_alpha=ALPHA, lora_dropout=0.1)
    kwargs[arg] = value
    with pytest.raises(exc) as info:
        LoRADense(**kwargs)
    assert f"'{arg}'" in str(info.value)


def test_good_edge_arguments_accepted():
    assert LoRADense(1, 1, 1, -2, 0.0).scaling == -2.0  # negative alpha is allowed (only 0 is not)
    assert LoRADense(2, 2, 1, 1, 0.999, lora_a_init=0.5, lora_b_init=HeUniform()).lora_dropout_p == 0.999
    assert LoRADense(2, 3, 1, 1, 0.0, has_bias=False, bias_init=_wrong((7,))).bias is None  # unused bias_init
    half = LoRADense(2, 3, 1, 1, 0.0, weight_init=Tensor(np.ones((3, 2), np.float16)), param_init_type=ms.float32)
    assert half.weight.dtype == ms.float32 and half.weight.asnumpy().sum() == 6.0  # Tensor inits take param dtype


def test_documented_tk_import_path():
    from tk.delta.lora import LoRADense as TkLoRADense  # pylint: disable=import-outside-toplevel
    assert TkLoRADense is LoRADense


# ----------------------------------------------------------------------------- shard
STRATEGIES = {
    "strategy_org_dense_matmul": ((2, 1), (4, 1)),
    "strategy_org_bias_add": ((2, 4), (4,)),
    "strategy_lora_dropout": ((8, 1),),
    "strategy_lora_a_matmul": ((2, 1), (1, 1)),
    "strategy_lora_b_matmul": ((1, 2), (4, 2)),
    "strategy_lora_mul": ((2, 4), ()),
    "strategy_lora_add": ((4, 2), (4, 2)),
}
PRIMITIVE_OF = {"strategy_org_dense_matmul": "matmul", "strategy_org_bias_add": "bias_add",
                "strategy_lora_dropout": "lora_dropout", "strategy_lora_a_matmul": "lora_a_matmul",
                "strategy_lora_b_matmul": "lora_b_matmul", "strategy_lora_mul": "mul", "strategy_lora_add": "add"}
SHARD_ACTIVATIONS = [  # id, activation factory, how to reach its primitive
    ("none", lambda: None, None),
    ("relu-name", lambda: "relu", lambda act: act.relu),
    ("gelu-name", lambda: "gelu", lambda act: act.activation),
    ("relu-cell", nn.ReLU, lambda act: act.relu),
    ("relu-primitive", ops.ReLU, lambda act: act),
]


@pytest.mark.parametrize("make_act,prim_of", [c[1:] for c in SHARD_ACTIVATIONS], ids=[c[0] for c in SHARD_ACTIVATIONS])
def test_shard_attaches_each_strategy_to_its_primitive(make_act, prim_of):
    layer = LoRADense(8, 4, 2, 4, 0.1, activation=make_act())
    act_strategy = ((2, 4),)
    assert layer.shard(**STRATEGIES, strategy_activation=act_strategy) is layer
    for arg, attr in PRIMITIVE_OF.items():
        assert _strategy(getattr(layer, attr)) == STRATEGIES[arg], arg
    if prim_of is not None:
        assert _strategy(prim_of(layer.activation)) == act_strategy


def test_shard_documented_example_and_partial():
    layer = LoRADense(8, 4, 2, 4, 0.1)
    layer.shard(strategy_org_dense_matmul=((2, 1), (4, 1)), strategy_org_bias_add=((2, 4), (4,)),
                strategy_lora_dropout=((2, 1),), strategy_lora_a_matmul=((2, 1), (1, 1)),
                strategy_lora_b_matmul=((2, 1), (4, 1)), strategy_lora_mul=((2, 4), ()),
                strategy_lora_add=((2, 4), (2, 4)), strategy_activation=((2, 4), (2, 4)))
    assert _strategy(layer.mul) == ((2, 4), ())
    other = LoRADense(8, 4, 2, 4, 0.1).shard(strategy_lora_add=((2, 1), (2, 1)))
    assert _strategy(other.add) == ((2, 1), (2, 1)) and _strategy(other.matmul) is None


BAD_STRATEGIES = [
    ("strategy_org_dense_matmul", [(2, 1), (4, 1)], TypeError),
    ("strategy_org_dense_matmul", ((2, 1),), ValueError),
    ("strategy_org_bias_add", ((2, 4), (4, 1)), ValueError),
    ("strategy_lora_dropout", ((0, 1),), ValueError),
    ("strategy_lora_a_matmul", ((2, 1), (1, 1), (1, 1)), ValueError),
    ("strategy_lora_b_matmul", (2, 1), TypeError),
    ("strategy_lora_mul", ((2, 4), (1,)), ValueError),
    ("strategy_lora_add", ((2, True), (2, 4)), ValueError),
    ("strategy_activation", "data_parallel", TypeError),
    ("strategy_activation", ((2, -4),), ValueError),
]


@pytest.mark.parametrize("arg,value,exc", BAD_STRATEGIES,
                         ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD_STRATEGIES)])
def test_shard_rejects_bad_strategy_before_attaching_any(arg, value, exc):
    layer = LoRADense(8, 4, 2, 4, 0.1, activation="relu")
    good = {k: v for k, v in STRATEGIES.items() if k != arg}
    with pytest.raises(exc) as info:
        layer.shard(**good, **{arg: value})
    assert f"'{arg}'" in str(info.value)
    assert all(_strategy(getattr(layer, attr)) is None for attr in PRIMITIVE_OF.values())
    assert _strategy(layer.activation.relu) is None


def test_shard_activation_cell_without_primitive_raises():
    layer = LoRADense(8, 4, 2, 4, 0.1, activation=nn.GELU())  # nn.GELU computes through functional ops
    with pytest.raises(ValueError, match="strategy_activation"):
        layer.shard(strategy_lora_add=((2, 4), (2, 4)), strategy_activation=((2, 4),))
    assert _strategy(layer.add) is None


@pytest.fixture
def parallel_mode():
    """Set an auto-parallel mode (works on CPU without devices) and always reset it."""
    def _set(name):
        ms.set_auto_parallel_context(parallel_mode=name)
    yield _set
    ms.reset_auto_parallel_context()


@pytest.mark.parametrize("make_act", [lambda: "logsoftmax", nn.LogSoftmax, ops.LogSoftmax],
                         ids=["name", "cell", "primitive"])
@pytest.mark.parametrize("pmode", ["semi_auto_parallel", "auto_parallel"])
def test_shard_log_softmax_rejected_in_auto_parallel(parallel_mode, make_act, pmode):
    layer = LoRADense(8, 4, 2, 4, 0.1, activation=make_act())
    layer.shard(strategy_lora_add=((2, 4), (2, 4)))  # stand-alone: accepted
    other = LoRADense(8, 4, 2, 4, 0.1, activation=make_act())
    parallel_mode(pmode)
    with pytest.raises(ValueError, match="'activation'.*LogSoftmax"):
        other.shard(strategy_lora_add=((2, 4), (2, 4)))
    assert _strategy(other.add) is None
    LoRADense(8, 4, 2, 4, 0.1, activation="relu").shard(strategy_activation=((2, 4),))  # other activations fine


# ----------------------------------------------------------------------------- checkpoints
class _Block(nn.Cell):
    def __init__(self, dense):
        super().__init__()
        self.dense = dense

    def construct(self, x):
        return self.dense(x)


def test_dense_checkpoint_loads_and_matches_dense(mode, tmp_path):
    dense = _Block(nn.Dense(CIN, COUT, activation="relu"))
    path = str(tmp_path / "dense.ckpt")
    ms.save_checkpoint(dense, path)
    lora = _Block(LoRADense(CIN, COUT, RANK, ALPHA, 0.1, compute_dtype=ms.float32, activation="relu"))
    not_loaded, unexpected = ms.load_param_into_net(lora, ms.load_checkpoint(path))
    assert sorted(not_loaded) == [f"dense.{n}" for n in LORA_PARAMS] and not unexpected
    assert np.array_equal(lora.dense.weight.asnumpy(), dense.dense.weight.asnumpy())
    x = Tensor(_x((2, 3, CIN)))
    np.testing.assert_allclose(lora(x).asnumpy(), dense(x).asnumpy(), rtol=1e-6, atol=1e-6)
