"""The attention core (``softmax(scale Q K^T + bias) V``, grouped-query): fused CPU kernel against composed and
both against float64 numpy, value and the q, k, v gradients, GRAPH and PYNATIVE, float32 and float16, causal
and prefix-extended masks, H = Hk and grouped heads, odd sizes, a threaded call, empty batch; the ABI."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from mindpet.kernels import AttentionCore
from kernel_testing import assert_close, requires_fused, value_and_grads
from test_kernel_cpu_abi import _call

TOL = {np.float32: 3e-5, np.float16: 2e-2}


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def _reference(q, k, v, bias, scale, cot):
    q, k, v, bias, do = (t.astype(np.float64) for t in (q, k, v, bias, cot))
    groups = q.shape[1] // k.shape[1]
    kr, vr = np.repeat(k, groups, 1), np.repeat(v, groups, 1)
    s = scale * q @ kr.transpose(0, 1, 3, 2) + bias
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ vr
    dvr = p.transpose(0, 1, 3, 2) @ do
    dp = do @ vr.transpose(0, 1, 3, 2)
    ds = p * (dp - (do * o).sum(-1, keepdims=True))
    dq = scale * ds @ kr
    dkr = scale * ds.transpose(0, 1, 3, 2) @ q
    fold = lambda t: t.reshape(t.shape[0], k.shape[1], groups, *t.shape[2:]).sum(2)  # noqa: E731
    return o, [dq, fold(dkr), fold(dvr)]


def _causal(length, prefix=0):
    mask = np.triu(np.full((length, length), -1e4), 1)  # exp(-1e4) = 0; finite in float16
    return np.concatenate([np.zeros((length, prefix)), mask], 1)


def _inputs(b, h, hk, length, d, dtype, prefix=0, seed=0):
    rng = np.random.default_rng(seed)
    s = length + prefix
    q, k, v = (rng.standard_normal(shape) for shape in ((b, h, length, d), (b, hk, s, d), (b, hk, s, d)))
    cot = rng.standard_normal((b, h, length, d))
    return [t.astype(dtype) for t in (q, k, v, _causal(length, prefix), cot)]


def _check(b, h, hk, length, d, dtype, prefix=0):
    q, k, v, bias, cot = _inputs(b, h, hk, length, d, dtype, prefix)
    scale = 1.0 / np.sqrt(d)
    fused = value_and_grads(AttentionCore(scale, backend="fused"), [q, k, v, bias], cot)
    composed = value_and_grads(AttentionCore(scale, backend="composed"), [q, k, v, bias], cot)
    ref = _reference(q, k, v, bias, scale, cot)
    tol = TOL[dtype]
    assert fused[0].dtype == np.dtype(dtype)
    for name, f, c, e in zip(("o", "dq", "dk", "dv"), [fused[0]] + fused[1][:3], [composed[0]] + composed[1][:3],
                             [ref[0]] + ref[1]):
        assert_close(f, e, tol, f"fused {name} vs float64")
        assert_close(c, e, 10 * tol, f"composed {name} vs float64")
        assert_close(f, c, 10 * tol, f"fused {name} vs composed")
    assert not fused[1][3].any()  # the mask is a constant


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_fused_matches_composed_and_float64(mode, dtype):
    """SmolLM2's heads (9 query heads on 3 KV heads, head_dim 64), 2 x 37 tokens, causal."""
    _check(2, 9, 3, 37, 64, dtype)


@requires_fused
@pytest.mark.parametrize("b,h,hk,length,d,prefix", [(1, 2, 2, 5, 3, 0), (3, 4, 1, 1, 8, 2), (1, 6, 2, 9, 16, 4)],
                         ids=["mha-odd", "mqa-one-token-prefix", "prefix"])
def test_shapes(pynative, b, h, hk, length, d, prefix):
    _check(b, h, hk, length, d, np.float32, prefix)


@requires_fused
def test_large_call_runs_threaded(pynative):
    """1 x 9 heads x 256 tokens x 64: above the 2^25 multiply-add threshold (head pairs split)."""
    _check(1, 9, 3, 256, 64, np.float32)


@requires_fused
def test_empty_batch(pynative):
    q, k, v, bias, cot = _inputs(0, 4, 2, 3, 8, np.float32)
    out, grads = value_and_grads(AttentionCore(0.5, backend="fused"), [q, k, v, bias], cot)
    assert out.shape == q.shape and grads[0].shape == q.shape and grads[1].shape == k.shape


def test_bad_arguments(pynative):
    with pytest.raises(TypeError, match="scale"):
        AttentionCore("0.1")
    with pytest.raises(ValueError, match="backend"):
        AttentionCore(0.1, backend="fast")
    q, k, v, bias, _ = _inputs(1, 3, 2, 4, 8, np.float32)
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        AttentionCore(0.1)(Tensor(q), Tensor(k), Tensor(v), Tensor(bias))


@requires_fused
def test_abi_checks():
    f32 = np.float32
    q, k = np.ones((1, 2, 3, 4), f32), np.ones((1, 1, 5, 4), f32)
    outs = [np.zeros((1, 2, 3, 4), f32), np.zeros((1, 2, 3), f32)]
    code, arrays = _call("AttentionForward", [q, k, k * 2, np.zeros((3, 5), f32), np.array(0.5, f32)] + outs)
    assert code == 0 and np.allclose(arrays[-2], 2.0) and np.allclose(arrays[-1], 2.0 + np.log(5.0))
    assert _call("AttentionForward", [q, k, k, np.zeros((3, 4), f32), np.array(0.5, f32)] + outs)[0] != 0
    three = np.ones((1, 3, 3, 4), f32)
    bad_heads = [three, k, k, np.zeros((3, 5), f32), np.array(0.5, f32), np.zeros_like(three), np.zeros((1, 3, 3), f32)]
    assert _call("AttentionForward", [np.ones((1, 2, 3, 4), f32)] + bad_heads[1:5] + outs)[0] == 0
    k2 = np.ones((1, 2, 5, 4), f32)
    assert _call("AttentionForward", [three, k2, k2] + bad_heads[3:])[0] != 0  # 3 heads on 2 KV heads
    bad_lse = [np.zeros((1, 2, 3, 4), f32), np.zeros((1, 2, 3), np.float16)]
    assert _call("AttentionForward", [q, k, k, np.zeros((3, 5), f32), np.array(0.5, f32)] + bad_lse)[0] != 0
