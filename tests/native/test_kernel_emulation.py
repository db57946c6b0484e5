"""The data flow of the six Ascend C kernels (lora_linear, adapter, low_rank_adapter; forward and
backward), emulated in NumPy on the real plans (kernel_emulation.py), against the contract formulas
of ops/CONTRACTS.md in float64. Covers: blocks, chunks, row writers and private chunks, workspace
offsets (cores interleaved), vector boxes and their UB buffers, the Matmul-object sharing of the
backward kernels (4 objects at most), the atomic adds and the dropout mask, stage 2 grids. The
kernels themselves are not compiled here."""
from __future__ import annotations

import numpy as np
import pytest

import kernel_emulation as emu

native = pytest.importorskip("mindpet._native")
tm = native.tiling

# (m, d, bottleneck, rank, cores, small UB): M = 1, odd sizes, column-split grids (non-writer
# cores), several chunks per block (small UB).
CASES = [
    (1, 16, 8, 1, 1, False),
    (17, 40, 8, 3, 3, False),
    (33, 72, 24, 4, 7, True),
    (5, 300, 12, 2, 24, False),
    (70, 48, 40, 8, 4, True),
    (200, 48, 40, 8, 2, True),
]
CODES = [0, 1, 2, 4, 6]


def hardware(cores: int, small: bool):
    hw = tm.HardwareSpec()
    hw.cores = cores
    if small:  # forces chunk_m < block_m
        hw.ub_bytes, hw.ub_reserve_bytes = 64 * 1024, 8 * 1024
    return hw


def data(rng, *shape):
    return rng.standard_normal(shape) * 0.5


def assert_close(got, want):
    assert not np.isnan(got).any(), "an output element was never written"
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def forward_reference(h, ldl, ldr, bd, lul, lur, bu, code):
    t = h @ ldl
    z = t @ ldr + bd
    q = emu.act(code, z) @ lul
    return h + q @ lur + bu, t, z, q


@pytest.mark.parametrize("m,d,b,r,cores,small", CASES)
@pytest.mark.parametrize("code", CODES)
def test_low_rank_adapter_forward(m, d, b, r, cores, small, code):
    rng = np.random.default_rng(m * 1000 + d + code)
    args = (data(rng, m, d), data(rng, d, r), data(rng, r, b), data(rng, b), data(rng, b, r), data(rng, r, d),
            data(rng, d))
    hw = hardware(cores, small)
    plans = tm.plan_low_rank_adapter(m, d, b, r, 4, hw)
    got = emu.low_rank_adapter_forward(plans, cores, *args, code)
    for g, w in zip(got, forward_reference(*args, code)):
        assert_close(g, w)


@pytest.mark.parametrize("m,d,b,r,cores,small", CASES)
@pytest.mark.parametrize("code", CODES)
def test_low_rank_adapter_backward(m, d, b, r, cores, small, code):
    rng = np.random.default_rng(m * 1000 + d + code + 7)
    h, dy = data(rng, m, d), data(rng, m, d)
    ldl, ldr, bd, lul, lur, bu = data(rng, d, r), data(rng, r, b), data(rng, b), data(rng, b, r), data(rng, r, d), \
        data(rng, d)
    _, t, z, q = forward_reference(h, ldl, ldr, bd, lul, lur, bu, code)
    hw = hardware(cores, small)
    plans = tm.plan_low_rank_adapter(m, d, b, r, 4, hw)
    got = emu.low_rank_adapter_backward(plans, cores, dy, h, ldl, ldr, lul, lur, t, z, q, code)
    a = emu.act(code, z)
    dq = dy @ lur.T
    dz = (dq @ lul.T) * emu.act_grad(code, z)
    dt = dz @ ldr.T
    want = (dy + dt @ ldl.T, h.T @ dt, t.T @ dz, dz.sum(0), a.T @ dq, q.T @ dy, dy.sum(0))
    for g, w in zip(got, want):
        assert_close(g, w)


@pytest.mark.parametrize("m,d,b,r,cores,small", CASES)
@pytest.mark.parametrize("code", CODES)
def test_adapter_backward(m, d, b, r, cores, small, code):
    rng = np.random.default_rng(m * 1000 + d + code + 11)
    h, dy, wd, wu = data(rng, m, d), data(rng, m, d), data(rng, b, d), data(rng, d, b)
    z = h @ wd.T + data(rng, b)
    hw = hardware(cores, small)
    plans = tm.plan_adapter(m, d, b, 4, hw)
    got = emu.adapter_backward(plans, cores, dy, h, wd, wu, z, code)
    a = emu.act(code, z)
    dz = (dy @ wu) * emu.act_grad(code, z)
    want = (dy + dz @ wd, dz.T @ h, dz.sum(0), dy.T @ a, dy.sum(0))
    for g, w in zip(got, want):
        assert_close(g, w)


# (m, k, n, rank, cores, small UB): rank < 16 and odd sizes (N-tail tiles of u and g), M = 1,
# column-split grids, several chunks per block.
LORA_CASES = [
    (1, 16, 8, 1, 1, False),
    (17, 40, 24, 3, 3, False),
    (33, 72, 56, 8, 7, True),
    (5, 300, 40, 2, 24, False),
    (70, 48, 100, 16, 4, True),
    (200, 40, 48, 20, 2, True),
]


@pytest.mark.parametrize("m,k,n,r,cores,small", LORA_CASES)
@pytest.mark.parametrize("bias,dropout", [(True, False), (False, True), (True, True)])
def test_lora_linear_forward(m, k, n, r, cores, small, bias, dropout):
    rng = np.random.default_rng(m * 1000 + k + n + r)
    x, w, a, b = data(rng, m, k), data(rng, n, k), data(rng, r, k), data(rng, n, r)
    bb = data(rng, n) if bias else None
    mask = (rng.random((m, k)) > 0.3) / 0.7 if dropout else None
    scale = 16.0 / r
    plans = tm.plan_lora_linear(m, k, n, r, 4, bias, dropout, hardware(cores, small))
    y, u = emu.lora_linear_forward(plans, cores, x, w, bb, a, b, mask, scale)
    xd = x * mask if dropout else x
    u_want = xd @ a.T
    y_want = x @ w.T + (bb if bias else 0.0) + scale * u_want @ b.T
    assert_close(u, u_want)
    assert_close(y, y_want)


@pytest.mark.parametrize("m,k,n,r,cores,small", LORA_CASES)
@pytest.mark.parametrize("dropout", [False, True])
def test_lora_linear_backward(m, k, n, r, cores, small, dropout):
    rng = np.random.default_rng(m * 1000 + k + n + r + 5)
    dy, x, w, a, b = data(rng, m, n), data(rng, m, k), data(rng, n, k), data(rng, r, k), data(rng, n, r)
    mask = (rng.random((m, k)) > 0.3) / 0.7 if dropout else None
    xd = x * mask if dropout else x
    u = xd @ a.T
    scale = 16.0 / r
    plans = tm.plan_lora_linear(m, k, n, r, 4, False, dropout, hardware(cores, small))
    got = emu.lora_linear_backward(plans, cores, dy, x, w, a, b, u, mask, scale)
    g = dy @ b
    gl = scale * g @ a
    want = (dy @ w + (gl * mask if dropout else gl), scale * g.T @ xd, scale * dy.T @ u)
    for got_one, want_one in zip(got, want):
        assert_close(got_one, want_one)


@pytest.mark.parametrize("m,d,b,r,cores,small", CASES)
@pytest.mark.parametrize("code", CODES)
def test_adapter_forward(m, d, b, r, cores, small, code):
    rng = np.random.default_rng(m * 1000 + d + code + 13)
    h, wd, bd, wu, bu = data(rng, m, d), data(rng, b, d), data(rng, b), data(rng, d, b), data(rng, d)
    plans = tm.plan_adapter(m, d, b, 4, hardware(cores, small))
    y, z = emu.adapter_forward(plans, cores, h, wd, bd, wu, bu, code)
    z_want = h @ wd.T + bd
    assert_close(z, z_want)
    assert_close(y, h + emu.act(code, z_want) @ wu.T + bu)


def test_lora_cases_reach_tails_column_splits_and_several_chunks():
    """LORA_CASES exercise N-tail boxes of u / g (rank not a multiple of the base width), non-writer
    cores and multi-chunk blocks, in both stages."""
    tail = split = chunked = False
    for m, k, n, r, cores, small in LORA_CASES:
        plans = tm.plan_lora_linear(m, k, n, r, 4, True, True, hardware(cores, small))
        for key in ("forward", "dx"):
            plan = plans[key]
            tail |= r % plan.gemms[1].base_n != 0
            split |= plan.grid.n_blocks > 1
            chunked |= any(len(plan.chunks(c)) > 1 for c in range(plan.grid.used_cores))
    assert tail and split and chunked


def test_cases_reach_column_split_grids_and_several_chunks():
    """The case list exercises non-writer cores (n_blocks > 1) and multi-chunk blocks."""
    split = chunked = False
    for m, d, b, r, cores, small in CASES:
        plans = tm.plan_low_rank_adapter(m, d, b, r, 4, hardware(cores, small))
        for key in ("forward", "dh"):
            grid = plans[key].grid
            split |= grid.n_blocks > 1
            chunked |= any(len(plans[key].chunks(c)) > 1 for c in range(grid.used_cores))
        adapter = tm.plan_adapter(m, d, b, 4, hardware(cores, small))["dh"]
        split |= adapter.grid.n_blocks > 1
    assert split and chunked


def test_interleaving_detects_a_shared_private_region():
    """Sanity of the emulation: with every core given the same private region, interleaved cores
    corrupt each other and the check fails."""
    m, d, b, r, cores = 70, 48, 40, 8, 4
    hw = hardware(cores, True)
    plans = tm.plan_low_rank_adapter(m, d, b, r, 4, hw)
    rng = np.random.default_rng(3)
    args = (data(rng, m, d), data(rng, d, r), data(rng, r, b), data(rng, b), data(rng, b, r), data(rng, r, d),
            data(rng, d))
    original = emu.private_region
    try:
        emu.private_region = lambda global_bytes, core, per_core_bytes: global_bytes
        got = emu.low_rank_adapter_forward(plans, cores, *args, 2)
    finally:
        emu.private_region = original
    want = forward_reference(*args, 2)
    assert not all(np.allclose(g, w, rtol=2e-4, atol=2e-4) for g, w in zip(got, want))


def test_emulation_rejects_an_unaligned_workspace_region():
    """Sanity of the emulation: laid out without the 512-byte rounding (mindpet::tiling::WsRegion), an
    odd-width private region (chunk x rank 3 float32) starts unaligned and the replay refuses it."""
    m, k, n, r, cores = 37, 24, 20, 3, 3
    plans = tm.plan_lora_linear(m, k, n, r, 4, False, True, hardware(cores, True))
    rng = np.random.default_rng(5)
    x, w, a, b = data(rng, m, k), data(rng, n, k), data(rng, r, k), data(rng, n, r)
    mask = (rng.random((m, k)) > 0.5).astype(np.float32) * 2
    original = emu.ws_region
    try:
        emu.ws_region = lambda rows, row_bytes: rows * row_bytes
        with pytest.raises(AssertionError, match="not 512-byte aligned"):
            emu.lora_linear_forward(plans, cores, x, w, None, a, b, mask, 0.5)
    finally:
        emu.ws_region = original
    y, u = emu.lora_linear_forward(plans, cores, x, w, None, a, b, mask, 0.5)
    xd = x.astype(np.float64) * mask
    assert_close(u, xd @ a.T.astype(np.float64))
    assert_close(y, x.astype(np.float64) @ w.T + 0.5 * (xd @ a.T) @ b.T)
