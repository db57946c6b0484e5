"""The CPU kernels called directly through their aot ABI (ctypes, no MindSpore graph): contract
checks reject bad calls with a non-zero code, M = 0 gives zero weight gradients, and float16
results are rounded once from float32."""
from __future__ import annotations

import numpy as np
import pytest

from kernel_testing import call_aot, requires_fused

pytestmark = requires_fused


_call = call_aot


def _lora_fwd_args(m, k, n, r, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((m, k)), rng.standard_normal((n, k)), rng.standard_normal(n)
    a, bb = rng.standard_normal((r, k)), rng.standard_normal((n, r))
    ins = [v.astype(dtype) for v in (x, w, b, a, bb)] + [np.zeros(1, dtype)]
    attrs = [np.array(0.5, np.float32), np.array(1, np.int64), np.array(0, np.int64)]
    outs = [np.zeros((m, n), dtype), np.zeros((m, r), dtype)]
    return ins + attrs + outs


def test_forward_through_the_abi_matches_numpy():
    code, arrays = _call("LoraLinearForward", _lora_fwd_args(5, 7, 6, 2))
    assert code == 0
    x, w, b, a, bb = (v.astype(np.float64) for v in arrays[:5])
    u = x @ a.T
    np.testing.assert_allclose(arrays[-1], u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arrays[-2], x @ w.T + b + 0.5 * u @ bb.T, rtol=1e-5, atol=1e-5)


def test_float16_is_rounded_once_from_float32():
    code, arrays = _call("LoraLinearForward", _lora_fwd_args(9, 33, 17, 3, np.float16))
    assert code == 0
    x, w, b, a, bb = (v.astype(np.float64) for v in arrays[:5])
    expected = (x @ w.T + b + 0.5 * (x @ a.T) @ bb.T).astype(np.float32).astype(np.float16)
    diff = np.abs(arrays[-2].astype(np.float64) - expected.astype(np.float64))
    ulp = np.abs(np.spacing(expected)).astype(np.float64)
    assert np.all(diff <= ulp + 1e-6)  # at most one float16 ulp from the float32 result


@pytest.mark.parametrize("break_it", ["shape", "dtype", "nparam", "mask"])
def test_contract_violations_return_an_error(break_it, capfd):
    args = _lora_fwd_args(4, 8, 6, 2)
    if break_it == "shape":
        args[3] = np.zeros((2, 9), np.float32)  # lora_a [R, K+1]
    elif break_it == "dtype":
        args[1] = args[1].astype(np.float64)
    elif break_it == "nparam":
        args = args[:-1]
    else:
        args[8] = np.array(1, np.int64)  # has_mask but the mask is a 1-element stand-in
    code, _ = _call("LoraLinearForward", args)
    assert code != 0
    assert "[mindpet] LoraLinearForward" in capfd.readouterr().err


def test_backward_with_no_rows_gives_zero_weight_grads():
    k, n, r = 8, 6, 2
    f32 = np.float32
    ins = [np.zeros((0, n), f32), np.zeros((0, k), f32), np.ones((n, k), f32), np.ones((r, k), f32),
           np.ones((n, r), f32), np.zeros((0, r), f32), np.zeros(1, f32), np.array(1.0, f32), np.array(0, np.int64)]
    outs = [np.zeros((0, k), f32), np.full((r, k), 7, f32), np.full((n, r), 7, f32)]
    code, arrays = _call("LoraLinearBackward", ins + outs)
    assert code == 0
    assert not arrays[-2].any() and not arrays[-1].any()


def test_adapters_reject_unknown_activation_codes():
    rng = np.random.default_rng(0)
    h, wd, bd, wu, bu = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (2, 4), (2,), (4, 2), (4,)))
    outs = [np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32)]
    code, _ = _call("AdapterForward", [h, wd, bd, wu, bu, np.array(99, np.int64)] + outs)
    assert code != 0
    code, arrays = _call("AdapterForward", [h, wd, bd, wu, bu, np.array(1, np.int64)] + outs)
    assert code == 0
    z = h @ wd.T + bd
    np.testing.assert_allclose(arrays[-1], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays[-2], h + np.maximum(z, 0) @ wu.T + bu, rtol=1e-5, atol=1e-6)
