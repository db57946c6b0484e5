"""The ``rms_norm`` op (optional fused residual add returning the sum): fused CPU kernel against composed
and both against float64 numpy, value, sum and every gradient (x, residual, weight, through both outputs),
GRAPH and PYNATIVE, float32 and float16, batch dims, odd and multi-threaded sizes, M = 0; argument checks;
the ABI."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import ParameterTuple, Tensor, nn, ops
from mindspore.common import dtype as mstype

from mindpet.kernels import RMSNorm, rms_norm
from kernel_testing import assert_close, requires_fused
from test_kernel_cpu_abi import _call

TOL = {np.float32: 3e-5, np.float16: 2e-2}


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


class _Loss(nn.Cell):
    """``sum(y * cot_y) (+ sum(h * cot_h))``: its gradients are the vector-Jacobian products of both outputs."""

    def __init__(self, norm, residual):
        super().__init__()
        self.norm = norm
        self.residual = residual

    def construct(self, x, r, cot_y, cot_h):
        if self.residual:
            y, h = self.norm(x, r)
            return (y * cot_y).sum() + (h * cot_h).sum()
        return (self.norm(x) * cot_y).sum()


class _ValueAndGrads(nn.Cell):
    def __init__(self, norm, residual):
        super().__init__()
        self.norm = norm
        self.residual = residual
        self.loss = _Loss(norm, residual)
        self.params = ParameterTuple(norm.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)

    def construct(self, x, r, cot_y, cot_h):
        if self.residual:
            y, h = self.norm(x, r)
        else:
            y = self.norm(x)
            h = x
        return y, h, self.grad(self.loss, self.params)(x, r, cot_y, cot_h)


def _run(norm, x, r, gamma, cot_y, cot_h, residual=True):
    """``[y, h, dx, dr, dweight]`` as numpy (h is x and dr zeros without a residual)."""
    norm.weight.set_data(Tensor(gamma))
    y, h, (inputs, params) = _ValueAndGrads(norm, residual)(Tensor(x), Tensor(r), Tensor(cot_y), Tensor(cot_h))
    return [y.asnumpy(), h.asnumpy(), inputs[0].asnumpy(), inputs[1].asnumpy(), params[0].asnumpy()]


def _reference(x, r, gamma, cot_y, cot_h, eps, residual=True):
    x, r, gamma, dy, dh = (v.astype(np.float64) for v in (x, r, gamma, cot_y, cot_h))
    d = x.shape[-1]
    s = (x + r if residual else x).reshape(-1, d)
    dy = dy.reshape(-1, d)
    rstd = 1.0 / np.sqrt((s * s).mean(-1, keepdims=True) + eps)
    xhat = s * rstd
    g = dy * gamma
    ds = rstd * (g - xhat * (g * xhat).mean(-1, keepdims=True))
    if residual:
        ds = ds + dh.reshape(-1, d)
    ds = ds.reshape(x.shape)
    return [(xhat * gamma).reshape(x.shape), s.reshape(x.shape), ds, ds if residual else np.zeros_like(ds),
            (dy * xhat).sum(0)]


def _inputs(batch, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (d,)) * 2 + 0.5
    r = rng.standard_normal(batch + (d,))
    gamma = 1 + 0.3 * rng.standard_normal(d)
    cot_y, cot_h = rng.standard_normal(batch + (d,)), rng.standard_normal(batch + (d,))
    return [v.astype(dtype) for v in (x, r, gamma, cot_y, cot_h)]


NAMES = ("y", "h", "dx", "dresidual", "dweight")


def _check(batch, d, dtype, eps=1e-5, residual=True):
    x, r, gamma, cot_y, cot_h = _inputs(batch, d, dtype)
    fused = _run(RMSNorm(d, epsilon=eps, backend="fused"), x, r, gamma, cot_y, cot_h, residual)
    composed = _run(RMSNorm(d, epsilon=eps, backend="composed"), x, r, gamma, cot_y, cot_h, residual)
    ref = _reference(x, r, gamma, cot_y, cot_h, eps, residual)
    tol = TOL[dtype]
    assert fused[0].dtype == np.dtype(dtype) and fused[2].dtype == np.dtype(dtype)
    for name, f, c, e in zip(NAMES, fused, composed, ref):
        assert_close(f, e, tol, f"fused {name} vs float64")
        assert_close(c, e, 10 * tol, f"composed {name} vs float64")
        assert_close(f, c, 10 * tol, f"fused {name} vs composed")


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_fused_matches_composed_and_float64(mode, dtype):
    """2 x 128 rows of 576 (the SmolLM2 width), with the residual add and its sum output."""
    _check((2, 128), 576, dtype)


@requires_fused
def test_without_residual(mode):
    _check((5, 3), 769, np.float32, residual=False)


@requires_fused
@pytest.mark.parametrize("batch,d", [((1,), 769), ((3, 1), 33), ((7,), 1)], ids=["M1-d769", "batch", "d1"])
def test_shapes(pynative, batch, d):
    _check(batch, d, np.float32)


@requires_fused
def test_large_call_runs_threaded(pynative):
    """1366 x 1536 elements: above the kernel's 2^21 threshold (rows and dweight partials split)."""
    _check((1366,), 1536, np.float32)


@requires_fused
def test_empty_batch(mode):
    """M = 0: empty outputs, zero weight gradient."""
    norm = RMSNorm(4, backend="fused")
    x = Tensor(np.zeros((0, 4), np.float32))
    y, h, (inputs, params) = _ValueAndGrads(norm, True)(x, x, x, x)
    assert y.shape == (0, 4) and h.shape == (0, 4) and inputs[0].shape == (0, 4)
    np.testing.assert_array_equal(params[0].asnumpy(), np.zeros(4, np.float32))


@requires_fused
def test_functional_form_and_float32_weight_cast(pynative):
    x, r, gamma, _, _ = _inputs((2, 3), 16, np.float32)
    y, h = rms_norm(Tensor(x), Tensor(gamma), 1e-6, Tensor(r), backend="fused")
    ref = _reference(x, r, gamma, x, x, 1e-6)
    assert_close(y.asnumpy(), ref[0], 1e-5, "functional y")
    assert_close(h.asnumpy(), ref[1], 1e-6, "functional h")
    y = rms_norm(Tensor(x), Tensor(gamma), 1e-6, backend="fused")
    assert_close(y.asnumpy(), _reference(x, r, gamma, x, x, 1e-6, residual=False)[0], 1e-5, "functional y, no r")
    norm = RMSNorm(16, backend="fused")  # float32 weight, float16 input: cast to float16
    assert norm(Tensor(x.astype(np.float16))).dtype == mstype.float16


def test_parameter_name_and_composed_selection():
    norm = RMSNorm(24, epsilon=1e-5)
    assert [p.name for p in norm.get_parameters()] == ["weight"]
    assert RMSNorm(24, backend="composed").impl == "composed"


def test_bad_arguments(pynative):
    with pytest.raises(ValueError, match="hidden_size"):
        RMSNorm(0)
    with pytest.raises(TypeError, match="hidden_size"):
        RMSNorm((8,))
    with pytest.raises(ValueError, match="epsilon"):
        RMSNorm(8, epsilon=-1.0)
    with pytest.raises(TypeError, match="epsilon"):
        RMSNorm(8, epsilon="small")
    with pytest.raises(ValueError, match="backend"):
        RMSNorm(8, backend="fast")
    with pytest.raises(TypeError, match="share one dtype"):
        RMSNorm(4)(Tensor(np.ones((2, 4), np.float32)), Tensor(np.ones((2, 4), np.float16)))


@requires_fused
def test_abi_checks():
    f32 = np.float32
    x, g = np.ones((3, 4), f32), np.ones(4, f32)
    no_res = [np.array(1e-5, f32), np.array(0, np.int64)]
    outs = [np.zeros((3, 4), f32), np.zeros(1, f32), np.zeros(3, f32)]
    code, arrays = _call("RmsNormForward", [x, np.zeros(1, f32), g] + no_res + outs)
    assert code == 0 and np.allclose(arrays[-3], 1 / np.sqrt(1 + 1e-5))
    bad_rstd = [np.zeros((3, 4), f32), np.zeros(1, f32), np.zeros(3, np.float16)]
    assert _call("RmsNormForward", [x, np.zeros(1, f32), g] + no_res + bad_rstd)[0] != 0
    with_res = [np.array(1e-5, f32), np.array(1, np.int64)]
    assert _call("RmsNormForward", [x, np.zeros(1, f32), g] + with_res + outs)[0] != 0  # residual [1]
    assert _call("RmsNormForward", [x, np.zeros(1, f32), g, np.array(-1.0, f32), np.array(0, np.int64)] + outs)[0] != 0
    empty = np.zeros((0, 4), f32)
    bwd_in = [empty, empty, empty, g, np.zeros(0, f32), np.array(1, np.int64)]
    code, arrays = _call("RmsNormBackward", bwd_in + [empty.copy(), np.full(4, 7, f32)])
    assert code == 0 and not arrays[-1].any()
