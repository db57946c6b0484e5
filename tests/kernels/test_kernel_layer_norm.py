"""The ``layer_norm`` op (optional fused residual): fused CPU kernel against composed (MindSpore
``LayerNorm``) and both against float64 numpy, value and every gradient (x, residual, gamma, beta),
GRAPH and PYNATIVE, float32 and float16, batch dims, M = 1, odd and multi-threaded sizes, constant
rows; drop-in compatibility with ``nn.LayerNorm``; argument checks; the ABI."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import ParameterTuple, Tensor, nn, ops
from mindspore.common import dtype as mstype

from mindpet.kernels import LayerNorm, layer_norm
from kernel_testing import assert_close, requires_fused
from test_kernel_cpu_abi import _call

TOL = {np.float32: 3e-5, np.float16: 2e-2}


@pytest.fixture
def pynative():
    """PYNATIVE only (no graph compile): for cases whose GRAPH path the mode-parametrised tests cover."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


class _Loss(nn.Cell):
    def __init__(self, norm, residual):
        super().__init__()
        self.norm = norm
        self.residual = residual

    def construct(self, x, r, cot):
        y = self.norm(x, r) if self.residual else self.norm(x)
        return (y * cot).sum()


class _ValueAndGrads(nn.Cell):
    def __init__(self, norm, residual):
        super().__init__()
        self.norm = norm
        self.residual = residual
        self.loss = _Loss(norm, residual)
        self.params = ParameterTuple(norm.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)

    def construct(self, x, r, cot):
        y = self.norm(x, r) if self.residual else self.norm(x)
        return y, self.grad(self.loss, self.params)(x, r, cot)


def _run(norm, x, r, gamma, beta, cot, residual=True):
    """``(y, [dx, dr, dgamma, dbeta])`` as numpy (dr is zeros without a residual)."""
    norm.gamma.set_data(Tensor(gamma))
    norm.beta.set_data(Tensor(beta))
    y, (inputs, params) = _ValueAndGrads(norm, residual)(Tensor(x), Tensor(r), Tensor(cot))
    return y.asnumpy(), [inputs[0].asnumpy(), inputs[1].asnumpy(), params[0].asnumpy(), params[1].asnumpy()]


def _reference(x, r, gamma, beta, cot, eps, residual=True):
    x, r, gamma, beta, dy = (v.astype(np.float64) for v in (x, r, gamma, beta, cot))
    d = x.shape[-1]
    s = (x + r if residual else x).reshape(-1, d)
    dy = dy.reshape(-1, d)
    mean = s.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((s - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (s - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    dx = dx.reshape(x.shape)
    return (xhat * gamma + beta).reshape(x.shape), [dx, dx if residual else np.zeros_like(dx),
                                                     (dy * xhat).sum(0), dy.sum(0)]


def _inputs(batch, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (d,)) * 2 + 0.5
    r = rng.standard_normal(batch + (d,))
    gamma, beta = 1 + 0.3 * rng.standard_normal(d), 0.3 * rng.standard_normal(d)
    cot = rng.standard_normal(batch + (d,))
    return [v.astype(dtype) for v in (x, r, gamma, beta, cot)]


NAMES = ("y", "dx", "dresidual", "dgamma", "dbeta")


def _check(batch, d, dtype, eps=1e-5, residual=True, inputs=None):
    x, r, gamma, beta, cot = inputs or _inputs(batch, d, dtype)
    fused = _run(LayerNorm((d,), epsilon=eps, dtype=mstype.float32, backend="fused"), x, r, gamma, beta, cot,
                 residual)
    composed = _run(LayerNorm((d,), epsilon=eps, backend="composed"), x, r, gamma, beta, cot, residual)
    ref = _reference(x, r, gamma, beta, cot, eps, residual)
    tol = TOL[dtype]
    assert fused[0].dtype == np.dtype(dtype) and fused[1][0].dtype == np.dtype(dtype)
    for name, f, c, e in zip(NAMES, [fused[0]] + fused[1], [composed[0]] + composed[1], [ref[0]] + ref[1]):
        assert_close(f, e, tol, f"fused {name} vs float64")
        assert_close(c, e, 10 * tol, f"composed {name} vs float64")
        assert_close(f, c, 10 * tol, f"fused {name} vs composed")
    return fused, ref


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_fused_matches_composed_and_float64(mode, dtype):
    """4 x 100 rows of 384 (the MiniLM width)."""
    _check((4, 100), 384, dtype)


@requires_fused
@pytest.mark.parametrize("batch,d", [((1,), 769), ((3, 1), 33), ((7,), 1)], ids=["M1-d769", "batch", "d1"])
def test_shapes(pynative, batch, d):
    _check(batch, d, np.float32)


@requires_fused
def test_large_call_runs_threaded(pynative):
    """1366 x 1536 elements: above the kernel's 2^21 threshold (rows and dgamma/dbeta partials split)."""
    _check((1366,), 1536, np.float32)


@requires_fused
def test_without_residual(mode):
    _check((5, 3), 769, np.float32, residual=False)


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_constant_rows(pynative, dtype):
    """Zero variance: y = beta exactly, dx = rstd (g - mean g) with rstd = 1/sqrt(eps)."""
    x, r, gamma, beta, cot = _inputs((6,), 40, dtype)
    x[:3] = np.array([0.1, -3.0, 7.25], dtype)[:, None]
    r[:3] = 0
    _check(None, 40, dtype, eps=1e-5, inputs=[x, r, gamma, beta, cot])
    y, _ = _run(LayerNorm((40,), epsilon=1e-12, backend="fused"), x[:3], r[:3], gamma, beta, cot[:3])
    np.testing.assert_array_equal(y, np.broadcast_to(beta, y.shape))


@requires_fused
def test_functional_form_and_float16_params_cast():
    x, r, gamma, beta, _ = _inputs((2, 3), 16, np.float32)
    y = layer_norm(Tensor(x), Tensor(gamma), Tensor(beta), 1e-6, Tensor(r), backend="fused").asnumpy()
    ref, _ = _reference(x, r, gamma, beta, x, 1e-6)
    assert_close(y, ref, 1e-5, "functional y")
    norm = LayerNorm((16,), backend="fused")  # float32 parameters, float16 input: cast to float16
    y16 = norm(Tensor(x.astype(np.float16)))
    assert y16.dtype == mstype.float16


def test_drop_in_for_nn_layer_norm():
    ours, theirs = LayerNorm((24,), epsilon=1e-12), nn.LayerNorm((24,), epsilon=1e-12)
    assert [p.name for p in ours.get_parameters()] == [p.name for p in theirs.get_parameters()] == ["gamma", "beta"]
    assert LayerNorm(24, backend="composed").impl == "composed"
    x = np.random.default_rng(1).standard_normal((3, 24)).astype(np.float32)
    assert_close(ours(Tensor(x)).asnumpy(), theirs(Tensor(x)).asnumpy(), 1e-5, "y")


def test_bad_arguments():
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm((2, 3))
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm((0,))
    with pytest.raises(TypeError, match="normalized_shape"):
        LayerNorm("384")
    with pytest.raises(ValueError, match="epsilon"):
        LayerNorm(8, epsilon=-1.0)
    with pytest.raises(TypeError, match="epsilon"):
        LayerNorm(8, epsilon="small")
    with pytest.raises(ValueError, match="backend"):
        LayerNorm(8, backend="fast")


@requires_fused
def test_abi_checks_and_empty_batch():
    f32 = np.float32
    x, g, b = np.ones((3, 4), f32), np.ones(4, f32), np.zeros(4, f32)
    attrs = [np.array(1e-5, f32), np.array(0, np.int64)]
    outs = [np.zeros((3, 4), f32), np.zeros(3, f32), np.zeros(3, f32)]
    assert _call("LayerNormForward", [x, np.zeros(1, f32), g, b] + attrs + outs)[0] == 0
    bad_stats = [np.zeros((3, 4), f32), np.zeros(3, np.float16), np.zeros(3, np.float16)]
    assert _call("LayerNormForward", [x, np.zeros(1, f32), g, b] + attrs + bad_stats)[0] != 0
    with_res = [np.array(1e-5, f32), np.array(1, np.int64)]
    assert _call("LayerNormForward", [x, np.zeros(1, f32), g, b] + with_res + outs)[0] != 0  # residual [1]
    empty = np.zeros((0, 4), f32)
    bwd_in = [empty, empty, np.zeros(1, f32), g, np.zeros(0, f32), np.zeros(0, f32), np.array(0, np.int64)]
    code, arrays = _call("LayerNormBackward", bwd_in + [empty.copy(), np.full(4, 7, f32), np.full(4, 7, f32)])
    assert code == 0 and not arrays[-1].any() and not arrays[-2].any()
