"""The ``attention`` core with a key-padding mask and dropout (contract section 9b): the fused CPU kernel and
the composed reference against an independent float64 numpy reference (values and the gradients of q, k and
v, by the chain rule through the explicit dropout mask): non-prefix masks, batch rows and causal query rows
without any visible key (zero output, zero gradients), odd L, L = 1, several row blocks and threads, GQA,
rotary; the dropout bits regenerated from the seed in numpy, fresh per call, dropped with probability p;
GRAPH and PYNATIVE; float16; argument errors; the ABI."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.kernels import Attention, contracts
from dropout_reference import U32, U64, mix32, mix64  # the counter hash, shared with dropout_mask's
from kernel_testing import assert_close, call_aot, requires_fused, value_and_grads

TOL = {np.float32: 2e-5, np.float16: 2e-2}


def dropout_keep(seed_words, b, nh, length, p):
    """``keep [B, NH, L, L]`` of the contract's hash (section 9b), written out in numpy."""
    words = np.asarray(seed_words, np.int64).astype(U32).astype(U64)
    seed = (words[0] << U64(32)) | words[1]
    with np.errstate(over="ignore"):
        rows = mix64(seed + (np.arange(b * nh * length, dtype=U64) + U64(1)) * U64(0x9E3779B97F4A7C15))
        lo, hi = (rows & U64(0xFFFFFFFF)).astype(U32), (rows >> U64(32)).astype(U32)
        cols = np.arange(length, dtype=U32)
        bits = mix32(lo[:, None] ^ mix32(cols[None, :] + hi[:, None])) >> U32(8)
    return (bits >= U32(int(p * 16777216.0))).reshape(b, nh, length, length)


def reference(q, k, v, nh, nkv, scale, causal, key_mask, cot, keep=None, p=0.0, cos=None, sin=None):
    """float64 ``(out, lse, dq, dk, dv)`` of ``sum(out * cot)``: full probabilities, explicit dropout mask."""
    q, k, v, cot = (np.asarray(a, np.float64) for a in (q, k, v, cot))
    b, length, width = q.shape
    d, groups = width // nh, nh // nkv

    def heads(x, n):
        return x.reshape(b, length, n, d).transpose(0, 2, 1, 3)

    def rot(x, inverse=False):
        c, s = np.asarray(cos, np.float64), np.asarray(sin, np.float64)
        half = d // 2
        if inverse:  # rot^T(y) = y cos + rotate_half^T(y sin), rotate_half^T([y1, y2]) = [y2, -y1]
            ys = x * s
            return x * c + np.concatenate([ys[..., half:], -ys[..., :half]], -1)
        return x * c + np.concatenate([-x[..., half:], x[..., :half]], -1) * s

    qh, kh, vh, gh = heads(q, nh), heads(k, nkv), heads(v, nkv), heads(cot, nh)
    if cos is not None:
        qh, kh = rot(qh), rot(kh)
    kr, vr = np.repeat(kh, groups, axis=1), np.repeat(vh, groups, axis=1)
    visible = np.broadcast_to(np.asarray(key_mask)[:, None, None, :] != 0, (b, nh, length, length))
    if causal:
        visible = visible & np.tril(np.ones((length, length), bool))
    scores = np.where(visible, qh @ kr.swapaxes(-1, -2) * scale, -np.inf)
    seen = visible.any(-1, keepdims=True)
    top = np.where(seen, scores.max(-1, keepdims=True), 0.0)
    total = np.exp(scores - top).sum(-1, keepdims=True)
    lse = np.where(seen, top + np.log(np.where(seen, total, 1.0)), -np.inf)[..., 0]
    probs = np.where(seen, np.exp(scores - top) / np.where(seen, total, 1.0), 0.0)
    drop = np.ones_like(probs) if keep is None else keep / (1.0 - p)
    out = (probs * drop) @ vr
    d_pd = gh @ vr.swapaxes(-1, -2)
    dp = d_pd * drop
    ds = probs * (dp - (dp * probs).sum(-1, keepdims=True))
    dqh = ds @ kr * scale
    dkh = (ds.swapaxes(-1, -2) @ qh * scale).reshape(b, nkv, groups, length, d).sum(2)
    dvh = ((probs * drop).swapaxes(-1, -2) @ gh).reshape(b, nkv, groups, length, d).sum(2)
    if cos is not None:
        dqh, dkh = rot(dqh, True), rot(dkh, True)

    def rows(x):
        return x.transpose(0, 2, 1, 3).reshape(b, length, -1)

    return rows(out), lse, rows(dqh), rows(dkh), rows(dvh)


def _inputs(b, length, nh, nkv, d, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, length, nh * d)).astype(dtype)
    k = rng.standard_normal((b, length, nkv * d)).astype(dtype)
    v = rng.standard_normal((b, length, nkv * d)).astype(dtype)
    cot = rng.standard_normal((b, length, nh * d)).astype(dtype)
    return [q, k, v], cot


def _rotary(length, d, dtype=np.float32):
    angles = np.outer(np.arange(length), 1.0 / 100.0 ** (np.arange(0, d, 2) / d))
    angles = np.concatenate([angles, angles], -1)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def _mask(kind, b, length, seed=1):
    """``[B, L]`` int32: 'holes' (random, not a prefix, batch row 1 all masked when B > 1), 'lead' (the first
    keys masked: causal rows without a visible key), 'ones'."""
    if kind == "ones":
        return np.ones((b, length), np.int32)
    if kind == "lead":
        m = np.ones((b, length), np.int32)
        m[:, :min(2, length - 1)] = 0
        return m
    m = (np.random.default_rng(seed).random((b, length)) < 0.6).astype(np.int32)
    m[0, -1] = 1
    if b > 1:
        m[1] = 0
    return m


class _FixedSeed(nn.Cell):
    """Stands in for the Cell's seed draw (``UniformInt``): the same given seed every call."""

    def __init__(self, words):
        super().__init__()
        self.words = Tensor(np.asarray(words, np.int32))

    def construct(self, shape, low, high):
        return self.words


class _SoftmaxLoss(nn.Cell):
    def construct(self, x, c):
        return (ops.softmax(x, axis=-1) * c).sum()


@pytest.fixture(autouse=True, scope="module")
def _rank4_softmax_gradient_seen_with_long_rows_first():
    """As in test_kernel_attention.py: MindSpore 2.10 (CPU, GRAPH) specialises its process-wide softmax
    gradient on the first rank-4 shape it sees, and after rows of length 1 (the composed L = 1 case) later
    rank-4 softmax gradients are wrong. Differentiate a rank-4 softmax with rows of length 3 first."""
    x = np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3) / 10
    grad = ops.GradOperation()(_SoftmaxLoss())(Tensor(x), Tensor(np.ones_like(x))).asnumpy()
    assert np.abs(grad).max() < 1e-6


# (B, L, NH, NKV, D, causal, rotary, mask): a fully masked batch row, causal rows without a visible key,
# L = 1, GQA, odd L, three 64-row blocks
CASES = [
    (2, 7, 3, 3, 8, False, False, "holes"),
    (3, 5, 4, 2, 6, True, True, "lead"),
    (1, 1, 2, 2, 4, False, False, "ones"),
    (2, 133, 2, 1, 8, False, False, "holes"),
]
SEED = (123456789, -987654321)


def _check(backend, case, dtype=np.float32, p=0.0, training=False):
    b, length, nh, nkv, d, causal, rotary, kind = case
    tensors, cot = _inputs(b, length, nh, nkv, d, dtype)
    mask = _mask(kind, b, length)
    cos, sin = _rotary(length, d, dtype) if rotary else (None, None)
    scale = 1.0 / np.sqrt(d)
    op = Attention(nh, d, nkv, causal=causal, backend=backend, dropout=p)
    op.set_train(training)
    keep = None
    if training and p > 0:
        op.draw_seed = _FixedSeed(SEED)
        keep = dropout_keep(SEED, b, nh, length, p)
    if rotary:
        out, grads = value_and_grads(op, tensors + [cos, sin, mask], cot)
    else:
        out, grads = value_and_grads(_NoRotary(op), tensors + [mask], cot)
    ref = reference(*tensors, nh, nkv, scale, causal, mask, cot, keep, p, cos, sin)
    tol = TOL[dtype]
    assert out.dtype == dtype
    assert_close(out, ref[0], tol, f"{backend} out")
    for name, got, want in zip(("dq", "dk", "dv"), grads[:3], ref[2:]):
        err = float(np.abs(np.asarray(got, np.float64) - want).max())
        assert got.shape == want.shape and err <= tol * max(float(np.abs(want).max()), 0.1), \
            f"{backend} {name}: max error {err:.3g}"
    return out, grads, ref


class _NoRotary(nn.Cell):
    """``op(q, k, v, key_mask=mask)``: the mask passed without cos and sin."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def construct(self, q, k, v, mask):
        return self.op(q, k, v, None, None, mask)


@requires_fused
@pytest.mark.parametrize("case", CASES)
def test_fused_and_composed_match_numpy_graph(case):
    out, grads, ref = _check("fused", case)
    _check("composed", case)
    b, length = case[0], case[1]
    if case[-1] == "holes" and b > 1:  # batch row 1 sees no key: zero output, zero gradients
        assert not np.any(out[1]) and not np.any(grads[0][1]) and not np.any(grads[1][1]) and not np.any(grads[2][1])
        assert np.all(ref[1][1] == -np.inf)


@requires_fused
@pytest.mark.parametrize("case", [CASES[0], CASES[1]])
def test_fused_and_composed_match_numpy_pynative(case):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        _check("fused", case)
        _check("composed", case)
        _check("fused", case, p=0.25, training=True)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@requires_fused
@pytest.mark.parametrize("case", CASES)
def test_fused_dropout_matches_numpy_with_the_seed_bits(case):
    _check("fused", case, p=0.3, training=True)


@requires_fused
def test_threaded_size_with_mask_and_dropout_matches_numpy():
    """Several threads (units * L^2 * D * 2 >= 2^25 multiply-adds) and 4 row blocks."""
    _check("fused", (2, 200, 4, 4, 64, False, False, "holes"), p=0.1, training=True)


@requires_fused
@pytest.mark.parametrize("case", [CASES[0], CASES[1]])
def test_float16_is_widened_and_accurate(case):
    _check("fused", case, np.float16)
    _check("fused", case, np.float16, p=0.2, training=True)


@requires_fused
def test_eval_mode_drops_nothing_and_training_draws_a_fresh_mask_per_call():
    """q = k = 0 gives p = 1/L; v = the identity (D = L) then shows the dropout mask itself in out."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        b, length, p = 2, 64, 0.5
        zeros = Tensor(np.zeros((b, length, length), np.float32))
        eye = Tensor(np.broadcast_to(np.eye(length, dtype=np.float32), (b, length, length)).copy())
        mask = Tensor(np.ones((b, length), np.int32))
        op = Attention(1, length, causal=False, backend="fused", dropout=p)
        op.set_train(False)
        assert np.allclose(op(zeros, zeros, eye, None, None, mask).asnumpy(), 1.0 / length, atol=1e-6)
        op.set_train(True)
        first = op(zeros, zeros, eye, None, None, mask).asnumpy() * length * (1 - p)
        second = op(zeros, zeros, eye, None, None, mask).asnumpy() * length * (1 - p)
        for kept in (first, second):
            assert np.allclose(kept, np.round(kept), atol=1e-5)
            assert abs(kept.mean() - (1 - p)) < 0.03
        assert np.mean(np.round(first) != np.round(second)) > 0.3
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@requires_fused
def test_primitive_outputs_follow_the_contract_and_lse_is_minus_inf_without_keys():
    from mindpet.kernels import _primitives
    b, length, nh, nkv, d = 2, 5, 4, 2, 4
    (q, k, v), _ = _inputs(b, length, nh, nkv, d)
    mask = _mask("holes", b, length)
    flat = [Tensor(x.reshape(b * length, -1)) for x in (q, k, v)]
    table = Tensor(np.zeros((length, d), np.float32))
    out, lse = _primitives.attention_masked_forward("cpu")(*flat, table, table, Tensor(mask),
                                                          Tensor(np.zeros(2, np.int32)), nh, nkv, 0.5, 0, 0, 0.0)
    shapes = contracts.contract("attention_masked_fwd").out_shapes(*[x.shape for x in flat], table.shape,
                                                                   table.shape, mask.shape, (2,))
    assert [list(out.shape), list(lse.shape)] == [list(s) for s in shapes] == [[b * length, nh * d],
                                                                              [b, nh, length]]
    assert lse.dtype == ms.float32
    ref = reference(q, k, v, nh, nkv, 0.5, False, mask, np.zeros_like(q))
    lse = lse.asnumpy()
    assert np.all(lse[1] == -np.inf)
    assert_close(lse[0], ref[1][0], TOL[np.float32], "lse")


def test_composed_reference_matches_numpy_without_kernels():
    _check("composed", CASES[1])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"dropout": 1.0}, ValueError, "'dropout' must be in \\[0, 1\\), but got 1.0"),
    ({"dropout": -0.1}, ValueError, "'dropout' must be in \\[0, 1\\)"),
    ({"dropout": "0.1"}, TypeError, "'dropout' must be a float"),
])
def test_dropout_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Attention(2, 8, **kwargs)


@pytest.mark.parametrize("backend", ["composed", pytest.param("fused", marks=requires_fused)])
def test_key_mask_of_the_wrong_shape_raises_naming_it(backend):
    (q, k, v), _ = _inputs(2, 4, 2, 2, 8)
    with pytest.raises(ValueError, match="'key_mask' must be \\[B, L\\] = \\(2, 4\\), but got \\(2, 3\\)"):
        _NoRotary(Attention(2, 8, causal=False, backend=backend))(Tensor(q), Tensor(k), Tensor(v),
                                                                  Tensor(np.ones((2, 3), np.int32)))


@requires_fused
def test_abi_rejects_inconsistent_calls():
    b, length, nh, nkv, d = 2, 4, 4, 2, 8
    f32 = np.float32
    (q, k, v), _ = _inputs(b, length, nh, nkv, d)
    flat = [x.reshape(b * length, -1) for x in (q, k, v)]
    table = np.zeros((length, d), f32)
    mask, seed = _mask("holes", b, length), np.array([1, 2], np.int32)
    attrs = [np.array(nh, np.int64), np.array(nkv, np.int64), np.array(0.5, f32), np.array(0, np.int64),
             np.array(0, np.int64), np.array(0.1, f32)]
    outs = [np.zeros((b * length, nh * d), f32), np.zeros((b, nh, length), f32)]
    head = flat + [table, table]
    assert call_aot("AttentionMaskedForward", head + [mask, seed] + attrs + outs)[0] == 0
    assert call_aot("AttentionMaskedForward", head + [mask[:, :3], seed] + attrs + outs)[0] != 0
    assert call_aot("AttentionMaskedForward", head + [mask.astype(f32), seed] + attrs + outs)[0] != 0
    assert call_aot("AttentionMaskedForward", head + [mask, seed[:1]] + attrs + outs)[0] != 0
    assert call_aot("AttentionMaskedForward", head + [mask, seed] + attrs[:5] + [np.array(1.0, f32)] + outs)[0] != 0
    _, arrays = call_aot("AttentionMaskedForward", head + [mask, seed] + attrs + outs)
    out, lse = arrays[-2], arrays[-1]
    grads = [np.zeros_like(x) for x in flat]
    bwd_in = [np.ones_like(out)] + head + [mask, seed, out, lse] + attrs
    assert call_aot("AttentionMaskedBackward", bwd_in + grads)[0] == 0
    assert all(np.isfinite(g).all() for g in call_aot("AttentionMaskedBackward", bwd_in + grads)[1][-3:])
    assert call_aot("AttentionMaskedBackward", bwd_in[:9] + [lse[:, :2]] + attrs + grads)[0] != 0


@pytest.mark.parametrize("case", [CASES[0], CASES[1]])
def test_composed_float16_masks_without_overflow(case):
    """-1e9 is -inf in float16: the reference selects the masked scores instead of adding a bias (0 * -inf would
    be NaN), and a row without a visible key still gives zeros."""
    _check("composed", case, np.float16)
