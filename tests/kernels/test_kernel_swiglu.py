"""The ``swiglu`` op (``silu(gate) * up``): fused CPU kernel against composed and both against float64 numpy,
value and both gradients, GRAPH and PYNATIVE, float32 and float16, any shape, large (threaded) and empty
calls, extreme gates; argument checks; the ABI."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from mindpet.kernels import SwiGLU, swiglu
from kernel_testing import assert_close, requires_fused, value_and_grads
from test_kernel_cpu_abi import _call

TOL = {np.float32: 2e-5, np.float16: 2e-2}


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def _reference(gate, up, cot):
    z, u, dy = (v.astype(np.float64) for v in (gate, up, cot))
    with np.errstate(over="ignore"):  # exp(1e4) = inf gives s = 0, the right limit
        s = 1.0 / (1.0 + np.exp(-z))
    return z * s * u, [dy * u * s * (1.0 + z * (1.0 - s)), dy * z * s]


def _inputs(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * s).astype(dtype) for s in (scale, 1.0, 1.0)]


def _check(shape, dtype, inputs=None):
    gate, up, cot = inputs or _inputs(shape, dtype)
    fused = value_and_grads(SwiGLU(backend="fused"), [gate, up], cot)
    composed = value_and_grads(SwiGLU(backend="composed"), [gate, up], cot)
    ref = _reference(gate, up, cot)
    tol = TOL[dtype]
    assert fused[0].dtype == np.dtype(dtype) and fused[1][0].dtype == np.dtype(dtype)
    for name, f, c, e in zip(("y", "dgate", "dup"), [fused[0]] + fused[1], [composed[0]] + composed[1],
                             [ref[0]] + ref[1]):
        assert_close(f, e, tol, f"fused {name} vs float64")
        assert_close(c, e, 10 * tol, f"composed {name} vs float64")
        assert_close(f, c, 10 * tol, f"fused {name} vs composed")


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_fused_matches_composed_and_float64(mode, dtype):
    """1 x 256 x 1536 (the SmolLM2 MLP)."""
    _check((1, 256, 1536), dtype)


@requires_fused
@pytest.mark.parametrize("shape", [(7,), (3, 5, 11), (1, 1)], ids=["1d", "odd-3d", "one"])
def test_shapes(pynative, shape):
    _check(shape, np.float32)


@requires_fused
def test_large_call_runs_threaded(pynative):
    """2^22 + 3 elements: above the kernel's threshold (chunks on a team)."""
    _check((2 ** 22 + 3,), np.float32)


@requires_fused
def test_extreme_gates_stay_finite(pynative):
    gate = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], np.float32)
    up, cot = np.full(7, 0.5, np.float32), np.ones(7, np.float32)
    y, (dgate, dup) = value_and_grads(SwiGLU(backend="fused"), [gate, up], cot)
    ref_y, (ref_dg, ref_du) = _reference(gate, up, cot)
    assert np.isfinite(y).all() and np.isfinite(dgate).all() and np.isfinite(dup).all()
    assert_close(y, ref_y, 1e-6, "y")
    assert_close(dgate, ref_dg, 1e-6, "dgate")
    assert_close(dup, ref_du, 1e-6, "dup")


@requires_fused
def test_empty_and_functional(mode):
    empty = np.zeros((0, 8), np.float32)
    y, grads = value_and_grads(SwiGLU(backend="fused"), [empty, empty], empty)
    assert y.shape == (0, 8) and grads[0].shape == (0, 8) and grads[1].shape == (0, 8)


def test_functional_and_bad_arguments(pynative):
    gate, up, _ = _inputs((2, 6), np.float32)
    assert_close(swiglu(Tensor(gate), Tensor(up)).asnumpy(), _reference(gate, up, up)[0], 1e-5, "functional")
    with pytest.raises(ValueError, match="gate and up"):
        SwiGLU()(Tensor(gate), Tensor(up[:, :3]))
    with pytest.raises(ValueError, match="backend"):
        SwiGLU(backend="fast")


@requires_fused
def test_abi_checks():
    f32 = np.float32
    g, u = np.zeros((2, 3), f32), np.ones((2, 3), f32)
    code, arrays = _call("SwiGluForward", [g, u, np.full((2, 3), 7, f32)])
    assert code == 0 and not arrays[-1].any()
    assert _call("SwiGluForward", [g, np.ones((2, 4), f32), np.zeros((2, 3), f32)])[0] != 0
    assert _call("SwiGluForward", [g, u.astype(np.float16), np.zeros((2, 3), f32)])[0] != 0
    code, arrays = _call("SwiGluBackward", [u, g, u, np.zeros((2, 3), f32), np.zeros((2, 3), f32)])
    assert code == 0 and np.allclose(arrays[-2], 0.5) and not arrays[-1].any()
