"""adapter and low_rank_adapter: composed against float64 numpy, fused CPU kernels against composed
(values and the gradient of every input), GRAPH and PYNATIVE, float32 and float16, every fusable
activation, odd shapes, M = 1, batch dims."""
from __future__ import annotations

import math

import numpy as np
import pytest
from mindspore import nn, ops

from mindpet.kernels import Adapter, LowRankAdapter
from mindpet.kernels.activations import ACTIVATION_CODES, activation_code
from kernel_testing import assert_close, min_parallel_macs, requires_fused, value_and_grads

TOL = {np.float32: 3e-5, np.float16: 2e-2}
_erf = np.vectorize(math.erf)


def _act(name, z):
    """act(z) and act'(z) in float64 (the contract table)."""
    if name == "identity":
        return z, np.ones_like(z)
    if name == "relu":
        return np.maximum(z, 0), (z > 0).astype(z.dtype)
    if name == "gelu":
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)
    if name == "gelu_erf":
        return 0.5 * z * (1 + _erf(z / math.sqrt(2))), 0.5 * (1 + _erf(z / math.sqrt(2))) + z * np.exp(
            -z * z / 2) / math.sqrt(2 * math.pi)
    sig = 1 / (1 + np.exp(-z))
    if name == "sigmoid":
        return sig, sig * (1 - sig)
    if name == "tanh":
        return np.tanh(z), 1 - np.tanh(z) ** 2
    if name == "silu":
        return z * sig, sig * (1 + z * (1 - sig))
    raise ValueError(name)


def _adapter_inputs(batch, d, b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    vals = [rng.standard_normal(batch + (d,)), rng.standard_normal((b, d)) / np.sqrt(d), rng.standard_normal(b),
            rng.standard_normal((d, b)) / np.sqrt(b), rng.standard_normal(d)]
    return [v.astype(dtype) for v in vals], rng.standard_normal(batch + (d,)).astype(dtype)


def _lra_inputs(batch, d, b, r, dtype, seed=0):
    rng = np.random.default_rng(seed)
    vals = [rng.standard_normal(batch + (d,)), rng.standard_normal((d, r)) / np.sqrt(d),
            rng.standard_normal((r, b)) / np.sqrt(r), rng.standard_normal(b), rng.standard_normal((b, r)) / np.sqrt(b),
            rng.standard_normal((r, d)) / np.sqrt(r), rng.standard_normal(d)]
    return [v.astype(dtype) for v in vals], rng.standard_normal(batch + (d,)).astype(dtype)


def _adapter_reference(h, wd, bd, wu, bu, cot, act):
    h, wd, bd, wu, bu, cot = (v.astype(np.float64) for v in (h, wd, bd, wu, bu, cot))
    d = h.shape[-1]
    h2, dy = h.reshape(-1, d), cot.reshape(-1, d)
    z = h2 @ wd.T + bd
    a, da_dz = _act(act, z)
    y = h2 + a @ wu.T + bu
    dz = (dy @ wu) * da_dz
    grads = [(dy + dz @ wd).reshape(h.shape), dz.T @ h2, dz.sum(0), dy.T @ a, dy.sum(0)]
    return y.reshape(h.shape), grads


def _lra_reference(h, dl, dr, bd, ul, ur, bu, cot, act):
    h, dl, dr, bd, ul, ur, bu, cot = (v.astype(np.float64) for v in (h, dl, dr, bd, ul, ur, bu, cot))
    d = h.shape[-1]
    h2, dy = h.reshape(-1, d), cot.reshape(-1, d)
    t = h2 @ dl
    z = t @ dr + bd
    a, da_dz = _act(act, z)
    q = a @ ul
    y = h2 + q @ ur + bu
    dq = dy @ ur.T
    dz = (dq @ ul.T) * da_dz
    dt = dz @ dr.T
    grads = [(dy + dt @ dl.T).reshape(h.shape), h2.T @ dt, t.T @ dz, dz.sum(0), a.T @ dq, q.T @ dy, dy.sum(0)]
    return y.reshape(h.shape), grads


ADAPTER_NAMES = ("h", "w_down", "b_down", "w_up", "b_up")
LRA_NAMES = ("h", "down_left", "down_right", "b_down", "up_left", "up_right", "b_up")


def _check(op_cls, inputs, cot, act, names, dtype, reference):
    fused = value_and_grads(op_cls(act, backend="fused"), inputs, cot)
    composed = value_and_grads(op_cls(act, backend="composed"), inputs, cot)
    tol = TOL[dtype]
    assert fused[0].dtype == np.dtype(dtype)
    assert_close(fused[0], composed[0], tol, "y")
    for name, gf, gc in zip(names, fused[1], composed[1]):
        assert gf.dtype == np.dtype(dtype), name
        assert_close(gf, gc, tol, f"d{name}")
    ref_value, ref_grads = reference(*inputs, cot, act)
    assert_close(composed[0], ref_value, 10 * tol, "composed y")
    for name, gc, rg in zip(names, composed[1], ref_grads):
        assert_close(gc, rg, 10 * tol, f"composed d{name}")


@pytest.mark.parametrize("act", ["relu", "gelu_erf"])
def test_composed_matches_float64(mode, act):
    inputs, cot = _adapter_inputs((4, 3), 16, 8, np.float32)
    value, grads = value_and_grads(Adapter(act, backend="composed"), inputs, cot)
    ref_value, ref_grads = _adapter_reference(*inputs, cot, act)
    assert_close(value, ref_value, 1e-5, "y")
    for name, g, rg in zip(ADAPTER_NAMES, grads, ref_grads):
        assert_close(g, rg, 1e-5, f"d{name}")
    inputs, cot = _lra_inputs((4, 3), 16, 8, 2, np.float32)
    value, grads = value_and_grads(LowRankAdapter(act, backend="composed"), inputs, cot)
    ref_value, ref_grads = _lra_reference(*inputs, cot, act)
    assert_close(value, ref_value, 1e-5, "y")
    for name, g, rg in zip(LRA_NAMES, grads, ref_grads):
        assert_close(g, rg, 1e-5, f"d{name}")


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_adapter_fused_matches_composed(mode, dtype):
    assert 600 * 2 * 512 * 64 >= min_parallel_macs()  # threads own rows
    inputs, cot = _adapter_inputs((2, 300), 512, 64, dtype)
    _check(Adapter, inputs, cot, "gelu", ADAPTER_NAMES, dtype, _adapter_reference)


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_low_rank_adapter_fused_matches_composed(mode, dtype):
    assert 600 * 2 * 64 * (512 + 64) >= min_parallel_macs()
    inputs, cot = _lra_inputs((2, 300), 512, 64, 64, dtype)
    _check(LowRankAdapter, inputs, cot, "gelu", LRA_NAMES, dtype, _lra_reference)


@requires_fused
@pytest.mark.parametrize("act", sorted(ACTIVATION_CODES))
def test_every_fused_activation(act):
    """GRAPH mode (the default of the suite), odd sizes."""
    inputs, cot = _adapter_inputs((9,), 37, 5, np.float32)
    _check(Adapter, inputs, cot, act, ADAPTER_NAMES, np.float32, _adapter_reference)
    inputs, cot = _lra_inputs((9,), 37, 5, 3, np.float32)
    _check(LowRankAdapter, inputs, cot, act, LRA_NAMES, np.float32, _lra_reference)


@requires_fused
# 900 rows: 450 a thread, two row tiles each
@pytest.mark.parametrize("batch,d,b,r", [((1,), 769, 64, 1), ((3, 1), 33, 7, 3), ((900,), 769, 25, 24)],
                         ids=["M1-in769", "batch", "odd-rows"])
def test_fused_shapes(mode, batch, d, b, r):
    rows = int(np.prod(batch))
    if rows > 100:  # the many-rows case runs on several threads in both ops
        assert rows * 2 * min(d * b, r * (d + b)) >= min_parallel_macs()
    inputs, cot = _adapter_inputs(batch, d, b, np.float32)
    _check(Adapter, inputs, cot, "relu", ADAPTER_NAMES, np.float32, _adapter_reference)
    inputs, cot = _lra_inputs(batch, d, b, r, np.float32)
    _check(LowRankAdapter, inputs, cot, "relu", LRA_NAMES, np.float32, _lra_reference)


def test_activation_codes_of_cells_and_primitives():
    assert activation_code(None) == ACTIVATION_CODES["identity"]
    assert activation_code("GELU") == ACTIVATION_CODES["gelu"]
    assert activation_code(nn.GELU()) == ACTIVATION_CODES["gelu"]
    assert activation_code(nn.GELU(approximate=False)) == ACTIVATION_CODES["gelu_erf"]
    assert activation_code(ops.ReLU()) == ACTIVATION_CODES["relu"]
    assert activation_code(nn.SiLU()) == ACTIVATION_CODES["silu"]
    assert activation_code("elu") is None
    assert activation_code(nn.LeakyReLU()) is None


def test_unfusable_activation_runs_composed_under_auto_and_raises_under_fused():
    from mindpet.kernels import FusedBackendUnavailable  # pylint: disable=import-outside-toplevel
    assert Adapter("elu", backend="auto").impl == "composed"
    with pytest.raises(FusedBackendUnavailable, match="activation"):
        Adapter("elu", backend="fused")
    inputs, cot = _adapter_inputs((4,), 8, 3, np.float32)
    value, _ = value_and_grads(Adapter("elu", backend="auto"), inputs, cot)
    h, wd, bd, wu, bu = (v.astype(np.float64) for v in inputs)
    z = h @ wd.T + bd
    assert_close(value, h + np.where(z > 0, z, np.expm1(z)) @ wu.T + bu, 1e-5, "elu adapter")
