"""The data flow of the Ascend C adapter backward and low_rank_adapter forward/backward kernels,
emulated in NumPy on the real plans (kernel_emulation.py), against the contract formulas of
ops/CONTRACTS.md in float64. Covers: blocks, chunks, row writers and private chunks, workspace
offsets (cores interleaved), vector boxes and their UB buffers, the 4-object sharing of the
low-rank backward, stage 2 grids. The kernels themselves are not compiled here."""
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
        emu.private_region = lambda plan, global_bytes, core, row_bytes: global_bytes
        got = emu.low_rank_adapter_forward(plans, cores, *args, 2)
    finally:
        emu.private_region = original
    want = forward_reference(*args, 2)
    assert not all(np.allclose(g, w, rtol=2e-4, atol=2e-4) for g, w in zip(got, want))
