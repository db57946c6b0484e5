"""The elementwise ``activation`` op: composed against float64 numpy, fused CPU kernel against
composed (value and dx), GRAPH and PYNATIVE, float32 and float16, every contract activation, batch
dims, one element, odd and multi-threaded sizes, extreme inputs; backend selection; the ABI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from mindpet.kernels import Activation, FusedBackendUnavailable
from mindpet.kernels.activations import ACTIVATION_CODES
from kernel_testing import assert_close, requires_fused, value_and_grads
from test_kernel_adapters import _act
from test_kernel_cpu_abi import _call

TOL = {np.float32: 3e-5, np.float16: 2e-2}
# MindSpore's CPU Tanh (the composed reference of 'tanh') is off by up to ~1e-4 near |tanh| = 1;
# the fused kernel is held to TOL against float64 there.
COMPOSED_TOL = {"tanh": 3e-4}


@pytest.fixture
def pynative():
    """PYNATIVE only (no graph compile): for cases whose GRAPH path the mode-parametrised tests cover."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def _inputs(shape, dtype, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(shape)).astype(dtype), rng.standard_normal(shape).astype(dtype)


def _check(act, x, cot, tol):
    """fused vs composed and both vs float64: y and dx."""
    ref_y, ref_d = _act(act, x.astype(np.float64))
    ref_dx = cot.astype(np.float64) * ref_d
    fused = value_and_grads(Activation(act, backend="fused"), [x], cot)
    composed = value_and_grads(Activation(act, backend="composed"), [x], cot)
    assert fused[0].dtype == x.dtype and fused[1][0].dtype == x.dtype
    ctol = max(tol, COMPOSED_TOL.get(act, 0.0))
    assert_close(fused[0], composed[0], ctol, f"{act} y")
    assert_close(fused[1][0], composed[1][0], ctol, f"{act} dx")
    assert_close(fused[0], ref_y, tol, f"{act} y vs float64")
    assert_close(fused[1][0], ref_dx, tol, f"{act} dx vs float64")
    assert_close(composed[0], ref_y, 10 * ctol, f"composed {act} y vs float64")


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_gelu_erf_fused_matches_composed_and_float64(mode, dtype):
    x, cot = _inputs((3, 7, 769), dtype)  # batch dims, odd last dim
    _check("gelu_erf", x, cot, TOL[dtype])


@requires_fused
@pytest.mark.parametrize("act", sorted(ACTIVATION_CODES))
def test_every_activation_code(pynative, act):
    x, cot = _inputs((60, 512), np.float32, scale=3.0)
    _check(act, x, cot, TOL[np.float32])


@requires_fused
def test_large_call_runs_threaded(pynative):
    """2048 x 2049 elements: above the kernel's 2^22 threshold, so every thread owns a chunk."""
    x, cot = _inputs((2048, 2049), np.float32, scale=3.0)
    y, (dx,) = value_and_grads(Activation("gelu_erf", backend="fused"), [x], cot)
    for part in (slice(0, 2049), slice(1023 * 2049, 1025 * 2049), slice(-2049, None)):  # ends and the split
        xs, ys, dxs, cs = x.reshape(-1)[part], y.reshape(-1)[part], dx.reshape(-1)[part], cot.reshape(-1)[part]
        ref_y, ref_d = _act("gelu_erf", xs.astype(np.float64))
        assert_close(ys, ref_y, TOL[np.float32], "y")
        assert_close(dxs, cs * ref_d, TOL[np.float32], "dx")


@requires_fused
def test_one_element(mode):
    x, cot = _inputs((1,), np.float32)
    _check("gelu_erf", x, cot, TOL[np.float32])


@requires_fused
@pytest.mark.parametrize("act", ["gelu_erf", "gelu", "silu", "sigmoid", "tanh"])
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_extreme_inputs_stay_finite_and_exact(pynative, act):
    x = np.array([-1e30, -1e4, -60.0, -20.0, -9.0, -5.0, -1e-6, 0.0, 1e-6, 5.0, 9.0, 20.0, 60.0, 1e4, 1e30],
                 np.float32)
    cot = np.ones_like(x)
    y, (dx,) = value_and_grads(Activation(act, backend="fused"), [x], cot)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), (y, dx)
    ref_y, ref_d = _act(act, x.astype(np.float64))
    # per element: relative error 1e-5 or absolute 1e-6 (values of size ~1e30 compare relatively)
    assert np.all(np.abs(y - ref_y) <= 1e-5 * np.abs(ref_y) + 1e-6), (y, ref_y)
    assert np.all(np.abs(dx - ref_d) <= 1e-5 * np.abs(ref_d) + 1e-6), (dx, ref_d)


@requires_fused
def test_gelu_erf_tail_is_accurate():
    """Phi(x) = erfc(-x/sqrt2)/2 keeps relative accuracy where 1 + erf(x/sqrt2) cancels."""
    x = -np.linspace(3.0, 12.0, 64).astype(np.float32)
    y, _ = value_and_grads(Activation("gelu_erf", backend="fused"), [x], np.ones_like(x))
    ref_y = [v * 0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x.astype(np.float64)]  # no cancellation
    np.testing.assert_allclose(y, ref_y, rtol=2e-5, atol=1e-37)


def test_backend_selection_and_arguments():
    assert Activation("gelu_erf", backend="composed").impl == "composed"
    assert Activation("elu", backend="auto").impl == "composed"
    with pytest.raises(FusedBackendUnavailable, match="activation"):
        Activation("elu", backend="fused")
    with pytest.raises(TypeError, match="activation"):
        Activation(3)
    with pytest.raises(ValueError, match="backend"):
        Activation("relu", backend="fast")
    x, cot = _inputs((4, 5), np.float32)
    y, (dx,) = value_and_grads(Activation(nn.ELU(), backend="auto"), [x], cot)
    assert_close(y, np.where(x > 0, x, np.expm1(x)), 1e-6, "elu")


@requires_fused
def test_abi_rejects_bad_calls_and_handles_empty():
    x = np.linspace(-3, 3, 10).astype(np.float32)
    code, _ = _call("ActivationForward", [x, np.array(99, np.int64), np.zeros_like(x)])
    assert code != 0
    code, _ = _call("ActivationForward", [x, np.array(3, np.int64), np.zeros(9, np.float32)])
    assert code != 0
    code, _ = _call("ActivationBackward", [x, x.astype(np.float16), np.array(3, np.int64), np.zeros_like(x)])
    assert code != 0
    empty = np.zeros((0, 4), np.float32)
    code, _ = _call("ActivationForward", [empty, np.array(3, np.int64), empty.copy()])
    assert code == 0


def test_cpu_only_ops_run_composed_on_ascend(monkeypatch):
    """activation and layer_norm have no Ascend kernel: auto gives composed there, fused raises."""
    from mindpet.kernels import LayerNorm, backend as kbackend  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(kbackend, "fused_implementation", lambda device=None: ("ascend", ""))
    monkeypatch.setattr(kbackend, "device_target", lambda: "Ascend")
    assert Activation("gelu_erf").impl == "composed"
    assert LayerNorm(8).impl == "composed"
    with pytest.raises(FusedBackendUnavailable, match="no Ascend kernel"):
        Activation("gelu_erf", backend="fused")
    with pytest.raises(FusedBackendUnavailable, match="no Ascend kernel"):
        LayerNorm(8, backend="fused")
