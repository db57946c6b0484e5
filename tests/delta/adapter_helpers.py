"""Helpers shared by test_adapter.py and test_low_rank_adapter.py: numpy references, inputs, gradient
checks, argument-error tables, shard and checkpoint helpers for the two adapter families.

A named module, not a conftest: MindSpore compiles a Cell against the globals of its module, and every
conftest is named 'conftest' (see tests/graph).
"""
import inspect
import math

import numpy as np
import pytest
import mindspore as ms
import mindspore.dataset as ds
from mindspore import Tensor, nn, ops

from mindpet.graph import load_pretrained_and_delta


# ----------------------------------------------------------------------------- numpy references
def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


ACT = {None: lambda z: z, "relu": lambda z: np.maximum(z, 0.0), "gelu": gelu_tanh}


def dense_ref(x, p, act=None):
    """act(x W^T + b) in float64, for x of shape (*, in) and p with 'w' and 'b'."""
    x2 = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return ACT[act](x2 @ p["w"].T + p["b"]).reshape(x.shape[:-1] + (p["w"].shape[0],))


def to_f64(t):
    """A Tensor (any float dtype) as a float64 array."""
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


def round16(p):
    return {k: v.astype(np.float16).astype(np.float64) for k, v in p.items()}


# ----------------------------------------------------------------------------- inputs and parameters
def layer_cases(d):
    """Forward cases of an adapter block of hidden size ``d``:
    id, activation, input shape, input dtype, param dtype, compute dtype, tolerance."""
    return [
        ("gelu-3d-fp16", "gelu", (2, 3, d), np.float32, ms.float32, ms.float16, 1e-2),
        ("gelu-3d-fp32", "gelu", (2, 3, d), np.float32, ms.float32, ms.float32, 1e-5),
        ("relu-4d-fp32", "relu", (2, 1, 3, d), np.float32, ms.float32, ms.float32, 1e-5),
        ("relu-2d-fp16-params-fp16-input", "relu", (4, d), np.float16, ms.float16, ms.float16, 1e-2),
    ]


def x_of(shape, seed=2):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def dense_inits(out_channels, in_channels, seed=1):
    """Tensor ``weight_init`` / ``bias_init`` for a Dense-like layer."""
    rng = np.random.default_rng(seed)
    return {"weight_init": Tensor((rng.standard_normal((out_channels, in_channels)) * 0.5).astype(np.float32)),
            "bias_init": Tensor(rng.standard_normal(out_channels).astype(np.float32))}


def randomise(layer, names, seed, scale):
    """Give the parameters ``names`` of ``layer`` (the zero-initialised ones too) random non-zero values."""
    rng = np.random.default_rng(seed)
    for name in names:
        p = getattr(layer, name)
        p.set_data(Tensor((rng.standard_normal(p.shape) * scale).astype(np.float32)).astype(p.dtype))


def dense_and_delta_params(cell, layer, keys, names):
    """float64 arrays of ``layer``'s delta parameters (``names``) under ``keys``, plus the Dense
    part's 'w' and 'b' when ``cell`` is a Dense wrapper (``cell is not layer``)."""
    p = {k: to_f64(getattr(layer, n)) for k, n in zip(keys, names)}
    if cell is not layer:
        p["w"], p["b"] = to_f64(cell.weight), to_f64(cell.bias)
    return p


def check_backend_kw(sig):
    """The spec's arguments come first, in order; then the keyword-only kernel backend choice."""
    assert sig.parameters["backend"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["backend"].default is None


# ----------------------------------------------------------------------------- gradients
class Weighted(nn.Cell):
    """sum(cell(x) * dy): its gradient is the vector-Jacobian product with dy."""

    def __init__(self, cell, dy):
        super().__init__()
        self.cell = cell
        self.dy = Tensor(dy)

    def construct(self, x):
        return (self.cell(x) * self.dy).sum()


def central_difference(f, p, key, eps=1e-6):
    """d f(p) / d p[key] by central differences (float64)."""
    grad = np.zeros_like(p[key])
    for idx in np.ndindex(*p[key].shape):
        hi, lo = dict(p), dict(p)
        hi[key], lo[key] = p[key].copy(), p[key].copy()
        hi[key][idx] += eps
        lo[key][idx] -= eps
        grad[idx] = (f(hi) - f(lo)) / (2 * eps)
    return grad


def vjp(cell, weights, x, dy):
    """Gradients of sum(cell(x) * dy) with respect to the input and to ``weights``: ``(dx, grads)``."""
    return ms.grad(Weighted(cell, dy), grad_position=0, weights=weights)(Tensor(x))


def weight_grads(layer, weights, x, dy):
    """Gradients (numpy) of sum(layer(x) * dy) with respect to ``weights``, from a new grad function
    (a compiled one keeps returning gradients of the old values after set_data)."""
    return [g.asnumpy() for g in ms.grad(Weighted(layer, dy), grad_position=None, weights=weights)(x)]


def grads_after_one_step(layer, weights, x, dy, grads, lr=0.5):
    """One gradient-descent step on ``weights`` with ``grads``, then the new gradients."""
    for w, g in zip(weights, grads):
        w.set_data(Tensor(w.asnumpy() - lr * g))
    return weight_grads(layer, weights, x, dy)


def assert_gradients(p, loss, names, keys, grads):
    """Each of ``grads`` (named ``names``) equals the central difference of ``loss`` wrt ``p[key]``."""
    for name, key, got in zip(names, keys, grads):
        ref = central_difference(loss, p, key)
        assert np.abs(ref).max() > 1e-3, name
        np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=name)


# ----------------------------------------------------------------------------- argument errors
def wrong(shape):
    return Tensor(np.zeros(shape, np.float32))


# Errors of the arguments every adapter-type layer has.
ADAPTER_COMMON_ERRORS = [
    ("non_linearity", nn.ReLU(), TypeError), ("non_linearity", None, TypeError), ("non_linearity", 1, TypeError),
    ("non_linearity", "no_such_act", ValueError),
    ("param_init_type", ms.int32, TypeError), ("param_init_type", "float32", TypeError),
    ("param_init_type", ms.bfloat16, TypeError),
    ("compute_dtype", ms.float64, TypeError), ("compute_dtype", np.float16, TypeError),
    ("compute_dtype", ms.bfloat16, TypeError),
]


def dense_errors(out_channels, in_channels):
    """Errors of the ``nn.Dense`` arguments of a Dense wrapper with these sizes."""
    d, cin = out_channels, in_channels
    return [
        ("in_channels", 5.0, TypeError), ("in_channels", True, TypeError), ("in_channels", 0, ValueError),
        ("in_channels", -2, ValueError),
        ("out_channels", str(d), TypeError), ("out_channels", None, TypeError), ("out_channels", 0, ValueError),
        ("out_channels", -d, ValueError),
        ("has_bias", 1, TypeError), ("has_bias", "True", TypeError),
        ("activation", 1, TypeError), ("activation", object(), TypeError), ("activation", "no_such_act", KeyError),
        ("weight_init", [1.0], TypeError), ("weight_init", None, TypeError), ("weight_init", True, TypeError),
        ("bias_init", None, TypeError), ("bias_init", {"a": 1}, TypeError),
        ("weight_init", "no_such_init", ValueError), ("bias_init", "no_such_init", ValueError),
        ("weight_init", wrong((d * cin,)), ValueError), ("weight_init", wrong((cin, d)), ValueError),
        ("weight_init", wrong((d + 1, cin)), ValueError), ("weight_init", wrong((d, cin + 1)), ValueError),
        ("bias_init", wrong((1, d)), ValueError), ("bias_init", wrong((d + 1,)), ValueError),
    ]


def case_ids(cases):
    return [f"{a}-{type(v).__name__}-{e.__name__}-{i}" for i, (a, v, e) in enumerate(cases)]


def assert_bad_argument_raises(cls, kwargs, arg, value, exc):
    """``cls(**kwargs)`` with ``arg=value`` raises ``exc`` naming the argument and the class."""
    kwargs = dict(kwargs, **{arg: value})
    with pytest.raises(exc) as info:
        cls(**kwargs)
    assert f"'{arg}'" in str(info.value) and cls.__name__ in str(info.value)


# ----------------------------------------------------------------------------- shard
DENSE_STRATEGIES = {  # strategy argument -> (attribute of the primitive, a distinct valid strategy)
    "strategy_matmul_org": ("matmul", ((2, 4), (1, 4))),
    "strategy_bias_org": ("bias_add", ((2, 1), (1,))),
}


def strategy_of(prim):
    return getattr(prim, "in_strategy", None)


def check_dense_strategies(dense):
    """The Dense part's primitives carry DENSE_STRATEGIES and the ReLU activation ((1, 8),)."""
    for attr, strategy in DENSE_STRATEGIES.values():
        assert dense._primitives[attr] is getattr(dense, attr)  # pylint: disable=protected-access
        assert strategy_of(getattr(dense, attr)) == strategy
    assert strategy_of(dense.activation.relu) == ((1, 8),)


@pytest.fixture
def parallel_mode():
    """Set an auto-parallel mode (works on CPU without devices) and always reset it."""
    yield lambda name: ms.set_auto_parallel_context(parallel_mode=name)
    ms.reset_auto_parallel_context()


def check_log_softmax_rejected(set_mode, pmode, cells, delta_of):
    """Under ``pmode`` each ``(cell, arg)`` refuses ``shard`` naming ``arg`` and LogSoftmax, attaching nothing."""
    set_mode(pmode)
    for cell, arg in cells:
        with pytest.raises(ValueError, match=f"'{arg}'.*LogSoftmax"):
            cell.shard(strategy_residual_add=((2, 1), (2, 1)))
        assert strategy_of(delta_of(cell).residual_add) is None


# ----------------------------------------------------------------------------- checkpoints
def save_pretrained(net, path):
    """The base model's weights (no adapter parameter) as a checkpoint at ``path``."""
    ms.save_checkpoint([{"name": p.name, "data": p} for p in net.get_parameters() if "adapter" not in p.name], path)
    return path


def regression_data(in_channels, seed=11):
    """16 rows of (x, 3 targets) and the dataset of them in batches of 4."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, in_channels)).astype(np.float32)
    y = rng.standard_normal((16, 3)).astype(np.float32)
    return x, ds.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(4)


def assert_saved_trainables(path, net, expected):
    """The checkpoint at ``path`` holds exactly ``expected``, with the values ``net`` has."""
    saved = ms.load_checkpoint(path)
    assert sorted(saved) == sorted(expected)
    for name in expected:
        assert np.array_equal(saved[name].asnumpy(), net.parameters_dict()[name].asnumpy()), name
    return saved


def assert_reload_reproduces(fresh, net, pretrained, delta_path, x):
    """Loading the pre-trained file and the delta file into ``fresh`` reproduces ``net``'s outputs."""
    report = load_pretrained_and_delta(fresh, pretrained, delta_path)
    assert report.ok and sorted(report.overridden_keys) == ["head.bias", "head.weight"]
    assert np.array_equal(fresh(Tensor(x)).asnumpy(), net(Tensor(x)).asnumpy())
