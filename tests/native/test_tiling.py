"""Tiling of the fused Ascend kernels (pure C++ through mindpet._native): for a sweep of shapes and
core counts every output element is covered exactly once, tiles are aligned, on-chip budgets hold
(double buffering counted), no core gets work past the problem, and plans are deterministic."""
from __future__ import annotations

import itertools

import pytest

from tiling_checks import (check_column_sum, check_fused, check_gemm_plan, check_grid, coverage,
                           describe, ws_region)

native = pytest.importorskip("mindpet._native")
tm = native.tiling

CORES = [1, 2, 3, 7, 16, 24, 40]
RANKS = [1, 3, 8, 64]
# (m, k, n): M=1, odd sizes, tall, wide.
LORA_SHAPES = [(1, 64, 64), (1, 769, 3), (17, 769, 1000), (769, 384, 769), (4096, 1024, 1024)]
ADAPTER_SHAPES = [(1, 64, 8), (33, 769, 3), (769, 384, 64), (2048, 1024, 64)]


def hw_with(cores: int, **overrides) -> "tm.HardwareSpec":
    hw = tm.HardwareSpec()
    hw.cores = cores
    for key, value in overrides.items():
        setattr(hw, key, value)
    return hw


def test_default_hardware_is_an_a2_core():
    hw = tm.HardwareSpec()
    assert (hw.ub_bytes, hw.l1_bytes) == (192 * 1024, 512 * 1024)
    assert (hw.l0a_bytes, hw.l0b_bytes, hw.l0c_bytes) == (64 * 1024, 64 * 1024, 128 * 1024)
    assert hw.cores == 48 and hw.aiv_per_aic == 2


@pytest.mark.parametrize("dt", [2, 4])
@pytest.mark.parametrize("m,k,n", LORA_SHAPES)
def test_lora_linear_plans(m, k, n, dt):
    for cores, rank, dropout in itertools.product(CORES, RANKS, (False, True)):
        if (m, k, n) == (4096, 1024, 1024) and (cores not in (1, 40) or rank not in (8, 64)):
            continue  # keep the large shape to the extremes
        hw = hw_with(cores)
        plans = tm.plan_lora_linear(m, k, n, rank, dt, True, dropout, hw)
        fwd, dx = plans["forward"], plans["dx"]
        check_fused(fwd, hw, cores, objects=3)
        check_fused(dx, hw, cores, objects=4)
        assert (fwd.grid.m, fwd.grid.n) == (m, n) and (dx.grid.m, dx.grid.n) == (m, k)
        assert [g.n for g in fwd.gemms][1] == rank and [g.k for g in fwd.gemms] == [k, k, rank]
        assert [g.k for g in dx.gemms] == [n, n, rank]
        check_gemm_plan(plans["d_lora_a"], hw, cores, objects=4)
        check_gemm_plan(plans["d_lora_b"], hw, cores, objects=4)
        check_shared_object(plans["d_lora_a"], plans["d_lora_b"], m)
        assert (plans["d_lora_a"].grid.m, plans["d_lora_a"].grid.n) == (rank, k)
        assert (plans["d_lora_b"].grid.m, plans["d_lora_b"].grid.n) == (n, rank)
        # dropout: per-core x_d chunk workspace (forward), whole x_d (backward)
        # per-core operand chunks (s u or s g, and x_d with dropout) + whole-M tensors of stage 2
        # every region 512-byte aligned (ws_region)
        per_core = ws_region(fwd.chunk_m, rank * dt) + (ws_region(fwd.chunk_m, k * dt) if dropout else 0)
        assert fwd.workspace_bytes == fwd.grid.used_cores * per_core
        assert dx.workspace_bytes == (2 * ws_region(m, rank * dt) + (ws_region(m, k * dt) if dropout else 0)
                                      + dx.grid.used_cores * ws_region(dx.chunk_m, rank * dt))
        assert (fwd.elem_tile > 0 and (fwd.elem_tile * dt) % 32 == 0) if dropout else fwd.elem_tile == 0


@pytest.mark.parametrize("dt", [2, 4])
@pytest.mark.parametrize("m,d,b", ADAPTER_SHAPES)
def test_adapter_plans(m, d, b, dt):
    for cores in CORES:
        hw = hw_with(cores)
        plans = tm.plan_adapter(m, d, b, dt, hw)
        check_fused(plans["forward"], hw, cores, objects=2)
        check_fused(plans["dh"], hw, cores, objects=4)
        check_gemm_plan(plans["d_w_up"], hw, cores, objects=4)
        check_gemm_plan(plans["d_w_down"], hw, cores, objects=4)
        assert (plans["d_w_up"].grid.m, plans["d_w_up"].grid.n) == (d, b)
        assert (plans["d_w_down"].grid.m, plans["d_w_down"].grid.n) == (b, d)
        check_column_sum(plans["d_b_up"], hw, cores)
        check_column_sum(plans["d_b_down"], hw, cores)
        assert plans["d_b_up"].cols == d and plans["d_b_down"].cols == b
        dh = plans["dh"]
        assert dh.workspace_bytes == 2 * ws_region(m, b * dt) + dh.grid.used_cores * ws_region(dh.chunk_m, b * dt)
        fwd = plans["forward"]
        assert fwd.workspace_bytes == fwd.grid.used_cores * ws_region(fwd.chunk_m, b * dt)


@pytest.mark.parametrize("dt", [2, 4])
@pytest.mark.parametrize("m,d,b", ADAPTER_SHAPES)
def test_low_rank_adapter_plans(m, d, b, dt):
    for cores, rank in itertools.product((1, 3, 24, 40), RANKS):
        hw = hw_with(cores)
        plans = tm.plan_low_rank_adapter(m, d, b, rank, dt, hw)
        fwd = plans["forward"]
        check_fused(fwd, hw, cores, objects=4)
        check_fused(plans["dh"], hw, cores, objects=8)
        assert [g.n for g in fwd.gemms][:3] == [rank, b, rank]
        assert [g.k for g in fwd.gemms] == [d, rank, b, rank]
        for name, shape in (("d_down_left", (d, rank)), ("d_down_right", (rank, b)),
                            ("d_up_left", (b, rank)), ("d_up_right", (rank, d))):
            plan = plans[name]
            check_gemm_plan(plan, hw, cores, objects=8)
            assert (plan.grid.m, plan.grid.n) == shape
        check_column_sum(plans["d_b_up"], hw, cores)
        check_column_sum(plans["d_b_down"], hw, cores)
        check_low_rank_backward_objects(plans, m, rank, b)
        per_core = 2 * ws_region(fwd.chunk_m, rank * dt) + ws_region(fwd.chunk_m, b * dt)
        assert fwd.workspace_bytes == fwd.grid.used_cores * per_core
        dh = plans["dh"]
        per_core = 2 * ws_region(dh.chunk_m, rank * dt) + ws_region(dh.chunk_m, b * dt)
        assert dh.workspace_bytes == (2 * ws_region(m, rank * dt) + 2 * ws_region(m, b * dt)
                                      + dh.grid.used_cores * per_core)


def check_shared_object(one, two, m: int) -> None:
    """Two weight-gradient plans run on one Matmul object: identical bases, planned for the envelope
    of both grids, so every block of either fits the registered single-core shape."""
    assert describe_base(one.base) == describe_base(two.base)
    assert one.base.m == max(one.grid.block_m, two.grid.block_m)
    assert one.base.n == max(one.grid.block_n, two.grid.block_n)
    for plan in (one, two):
        assert plan.base.k == m  # the reduction runs over all M rows
        for core in range(plan.grid.used_cores):
            _, m_len, _, n_len = plan.grid.block(core)
            assert m_len <= plan.base.m and n_len <= plan.base.n


def test_lora_backward_weight_gradients_share_one_object():
    """mindpet_lora_linear_grad defines 4 Matmul objects (the API maximum): dy W, dy B, (s g) A and
    one for both dA [rank, k] and dB [n, rank], whose grids differ (dA splits columns, dB rows)."""
    hw = hw_with(40)
    plans = tm.plan_lora_linear(4096, 1024, 2048, 8, 2, True, True, hw)
    da, db = plans["d_lora_a"], plans["d_lora_b"]
    assert (da.grid.m_blocks, db.grid.n_blocks) == (1, 1)  # rank rows / rank columns stay whole
    assert da.grid.n_blocks > 1 and db.grid.m_blocks > 1
    assert da.grid.block_n != db.grid.block_n or da.grid.block_m != db.grid.block_m
    check_shared_object(da, db, 4096)
    check_gemm_plan(da, hw, 40, objects=4)
    check_gemm_plan(db, hw, 40, objects=4)
    # the shared base is larger than dA's own block in rows: dB's blocks set the envelope
    assert da.base.m == db.grid.block_m > da.grid.block_m
    check_fused(plans["dx"], hw, 40, objects=4)


def check_low_rank_backward_objects(plans, m: int, rank: int, b: int) -> None:
    """The low-rank backward kernel defines 4 Matmul objects (the API maximum) for its 8 gemms:
    each object is registered with the TCubeTiling of the largest gemm it serves, so every other
    gemm it serves must fit in that single-core shape."""
    dh = plans["dh"]
    g = dh.gemms
    # stage 1: (dq, dt) share rows and columns, differ in k; (dq Lul^T, dt Ldl^T) share rows and k.
    assert (g[0].m, g[0].n) == (g[2].m, g[2].n) == (dh.chunk_m, rank)
    assert (g[1].m, g[1].k) == (g[3].m, g[3].k) == (dh.chunk_m, rank)
    assert g[1].n == b and g[3].n == dh.grid.block_n
    # stage 2: each pair of weight gradients has one base planned for the envelope of its blocks.
    for first, second in (("d_down_left", "d_up_left"), ("d_down_right", "d_up_right")):
        one, two = plans[first], plans[second]
        assert describe_base(one.base) == describe_base(two.base)
        for plan in (one, two):
            assert plan.base.k == m  # the reduction runs over all M rows
            for core in range(plan.grid.used_cores):
                _, m_len, _, n_len = plan.grid.block(core)
                assert m_len <= plan.base.m and n_len <= plan.base.n
        assert one.base.m == max(one.grid.block_m, two.grid.block_m)
        assert one.base.n == max(one.grid.block_n, two.grid.block_n)


def describe_base(base) -> tuple:
    return (base.m, base.n, base.k, base.base_m, base.base_n, base.base_k, base.depth_a1,
            base.depth_b1, base.l1_bytes, base.l0a_bytes, base.l0b_bytes, base.l0c_bytes)


def test_low_rank_backward_weight_gradients_share_an_envelope():
    # d = 1024, rank 8: dLdl [1024, 8] splits its rows, dLdr [8, 64] cannot; the shared base of
    # each pair is planned for the larger block of the pair.
    hw = hw_with(40)
    plans = tm.plan_low_rank_adapter(4096, 1024, 64, 8, 2, hw)
    left, up_left = plans["d_down_left"], plans["d_up_left"]
    assert left.grid.block_m > up_left.grid.block_m or left.grid.block_n != up_left.grid.block_n
    assert up_left.base.m == left.base.m >= left.grid.block_m
    check_gemm_plan(up_left, hw, 40, objects=8)
    small = tm.plan_low_rank_adapter(64, 32, 16, 4, 4, hw_with(3))
    check_low_rank_backward_objects(small, 64, 4, 16)


def test_small_budgets_still_fit():
    hw = hw_with(8, ub_bytes=48 * 1024, ub_reserve_bytes=8 * 1024, l1_bytes=128 * 1024,
                 l0a_bytes=16 * 1024, l0b_bytes=16 * 1024, l0c_bytes=32 * 1024)
    plans = tm.plan_lora_linear(769, 1000, 513, 64, 4, True, True, hw)
    check_fused(plans["forward"], hw, 8, objects=3)
    check_fused(plans["dx"], hw, 8, objects=4)
    check_shared_object(plans["d_lora_a"], plans["d_lora_b"], 769)
    assert plans["forward"].chunk_m < plans["forward"].grid.block_m  # UB forced smaller chunks


def test_fused_plan_shrinks_bases_when_the_smallest_chunk_overflows_ub():
    """The lora backward with dropout keeps three boxes of gemm[2]'s base in UB: with a small UB the
    bases the L0 budgets allow do not fit even at chunk 16, so PlanFused retries with smaller bases
    (L0C cap halved) instead of failing."""
    hw = hw_with(8, ub_bytes=48 * 1024, ub_reserve_bytes=8 * 1024, l1_bytes=128 * 1024,
                 l0a_bytes=16 * 1024, l0b_bytes=16 * 1024, l0c_bytes=32 * 1024)
    dx = tm.plan_lora_linear(769, 1000, 513, 64, 4, True, True, hw)["dx"]
    check_fused(dx, hw, 8, objects=4)
    budget = tm.shared_budget(hw, 4)
    assert max(g.l0c_bytes for g in dx.gemms) <= budget.l0c // 2
    # with room in UB the first pass (full L0C budget) is kept: wider boxes
    roomy = tm.plan_lora_linear(769, 1000, 513, 64, 4, True, True, hw_with(8))["dx"]
    assert roomy.gemms[2].base_n > dx.gemms[2].base_n


def test_plans_are_deterministic():
    hw = hw_with(24)
    first = tm.plan_lora_linear(777, 513, 1025, 8, 2, True, True, hw)
    second = tm.plan_lora_linear(777, 513, 1025, 8, 2, True, True, hw)
    for key in ("forward", "dx"):
        assert describe(first[key]) == describe(second[key])


def test_grid_uses_cores_for_large_problems_and_few_for_tiny_ones():
    big = tm.plan_lora_linear(4096, 1024, 1024, 16, 2, False, False, hw_with(40))["forward"]
    assert big.grid.used_cores >= 36  # the whole chip minus rounding
    tiny = tm.plan_lora_linear(1, 64, 64, 8, 2, False, False, hw_with(40))["forward"]
    assert tiny.grid.used_cores <= 4
    wide = tm.plan_lora_linear(1, 4096, 4096, 8, 2, False, False, hw_with(40))["forward"]
    assert wide.grid.m_blocks == 1 and wide.grid.n_blocks > 8  # M=1: split the columns


def test_direct_gemm_and_column_sum():
    for cores, (m, n, k) in itertools.product((1, 5, 40), ((1, 1, 1), (769, 3, 4096), (64, 769, 17))):
        hw = hw_with(cores)
        check_gemm_plan(tm.plan_gemm(m, n, k, 2, hw), hw, cores, objects=1)
        check_column_sum(tm.plan_column_sum(m, n, 4, hw), hw, cores)


def test_coverage_helper_detects_overlap_and_gaps():
    assert coverage((2, 2), [(0, 2, 0, 1), (0, 1, 1, 1)]).min() == 0
    assert coverage((2, 2), [(0, 2, 0, 2), (1, 1, 1, 1)]).max() == 2


@pytest.mark.parametrize("call", [
    lambda hw: tm.plan_lora_linear(0, 8, 8, 1, 2, True, False, hw),
    lambda hw: tm.plan_lora_linear(8, 8, 8, 0, 2, True, False, hw),
    lambda hw: tm.plan_lora_linear(8, 8, 8, 1, 8, True, False, hw),
    lambda hw: tm.plan_adapter(8, 0, 8, 2, hw),
    lambda hw: tm.plan_low_rank_adapter(8, 8, 8, 0, 2, hw),
    lambda hw: tm.plan_gemm(8, 8, 0, 2, hw),
])
def test_bad_shapes_are_rejected(call):
    with pytest.raises(ValueError, match="unsupported shape"):
        call(hw_with(8))


def test_no_cores_and_no_room_are_rejected():
    with pytest.raises(ValueError, match="no cores"):
        tm.plan_adapter(8, 8, 8, 2, hw_with(0))
    with pytest.raises(ValueError, match="on-chip"):
        tm.plan_adapter(64, 64, 8, 2, hw_with(4, ub_bytes=2048, ub_reserve_bytes=1024))
    with pytest.raises(ValueError, match="on-chip"):
        tm.plan_gemm(64, 64, 64, 2, hw_with(4, l0c_bytes=512))


def test_grid_blocks_of_a_column_split():
    plan = tm.plan_lora_linear(1, 64, 1000, 8, 2, False, False, hw_with(40))["forward"]
    check_grid(plan.grid, 40)
    last = plan.grid.block(plan.grid.used_cores - 1)
    assert last[2] + last[3] == 1000  # tail block ends at the edge


def test_float32_base_k_is_16_aligned_where_it_used_to_be_8():
    """float32 gemms whose k left baseK at 8/24/40/56 before (rank 3, 8, 40, 56 reductions of the lora
    backward and the low-rank gemms): every baseK is now a multiple of 16 (TCubeTiling: 16-element
    alignment when A is transposed or B is not; even float32 k)."""
    hw = hw_with(24)
    for rank in (3, 8, 24, 40, 56):
        lora = tm.plan_lora_linear(256, 200, 120, rank, 4, True, True, hw)
        low = tm.plan_low_rank_adapter(256, 200, 40, rank, 4, hw)
        bases = [g for key in ("forward", "dx") for g in lora[key].gemms]
        bases += [lora[key].base for key in ("d_lora_a", "d_lora_b")]
        bases += [g for key in ("forward", "dh") for g in low[key].gemms]
        for base in bases:
            assert base.base_k % 16 == 0 and base.base_k >= 16, (rank, base.k, base.base_k)
        assert any(base.k % 16 != 0 for base in bases)  # the shapes do exercise unaligned k


def test_workspace_regions_are_512_byte_aligned_for_odd_widths():
    """m * rank * sizeof(T) not a multiple of 32: every region of the layout still starts aligned."""
    plans = tm.plan_lora_linear(17, 33, 21, 3, 2, False, True, hw_with(7))
    dx = plans["dx"]
    assert (17 * 3 * 2) % 32 != 0
    assert dx.workspace_bytes == (2 * 512 + ws_region(17, 33 * 2)
                                  + dx.grid.used_cores * ws_region(dx.chunk_m, 3 * 2))
    assert dx.workspace_bytes % 512 == 0
