"""Invariant checks shared by the tiling tests: coverage, alignment, budgets."""
from __future__ import annotations

from typing import Iterable

import numpy as np

UB_ALIGN = 32
L0AB_ALIGN = 512
L0C_ALIGN = 64
CUBE = 16
K_GRANULE = 16  # baseK: 16 elements for float16 and float32 (TCubeTiling alignment constraints)
WS_ALIGN = 512  # GM workspace regions (mindpet::tiling::WsRegion)


def ws_region(rows: int, row_bytes: int) -> int:
    """Bytes of one GM workspace region, rounded up to WS_ALIGN (mindpet::tiling::WsRegion)."""
    return -(-rows * row_bytes // WS_ALIGN) * WS_ALIGN


def coverage(shape: tuple[int, int], rects: Iterable[tuple[int, int, int, int]]) -> np.ndarray:
    """Count how often each element of `shape` is covered by (m0, m_len, n0, n_len) rectangles."""
    count = np.zeros(shape, dtype=np.int32)
    for m0, ml, n0, nl in rects:
        assert ml > 0 and nl > 0, "empty tile"
        assert m0 + ml <= shape[0] and n0 + nl <= shape[1], "tile outside the output"
        count[m0:m0 + ml, n0:n0 + nl] += 1
    return count


def assert_exact_cover(shape: tuple[int, int], rects: Iterable[tuple[int, int, int, int]]) -> None:
    count = coverage(shape, rects)
    assert count.min() == 1 and count.max() == 1, (
        f"coverage of {shape}: min {count.min()}, max {count.max()}")


def check_base(base, budget) -> None:
    """Fractal alignment and budgets of one matmul object (double buffering counted)."""
    assert base.base_m % CUBE == 0 and base.base_n % CUBE == 0
    # TCubeTiling: baseK 16-aligned whenever A is transposed or B is not (the kernels do both), and
    # an even float32 k (matmul tiling source); SetFixSplit itself only checks the 32-byte C0.
    assert base.base_k % K_GRANULE == 0, f"baseK {base.base_k} ({base.in_bytes}-byte elements)"
    assert (base.base_k * base.in_bytes) % UB_ALIGN == 0
    assert base.base_m <= max(CUBE, -(-base.m // CUBE) * CUBE)
    assert base.base_n <= max(CUBE, -(-base.n // CUBE) * CUBE)
    a_tile = base.base_m * base.base_k * base.in_bytes
    b_tile = base.base_k * base.base_n * base.in_bytes
    c_tile = base.base_m * base.base_n * 4
    assert a_tile % L0AB_ALIGN == 0 and b_tile % L0AB_ALIGN == 0 and c_tile % L0C_ALIGN == 0
    assert base.l0a_bytes == 2 * a_tile and base.l0b_bytes == 2 * b_tile and base.l0c_bytes == c_tile
    assert base.l0a_bytes <= budget.l0a and base.l0b_bytes <= budget.l0b
    assert base.l0c_bytes <= budget.l0c and base.l1_bytes <= budget.l1
    check_l0c(base, budget)
    assert base.l1_bytes >= 2 * (base.depth_a1 * a_tile + base.depth_b1 * b_tile)
    assert base.l1_bytes % UB_ALIGN == 0


def check_l0c(base, budget) -> None:
    """L0C of one Matmul object. The cube-side server keeps one instance per vector core of each
    object (MatmulInst::cubeObj[MIX_NUM], MIX_NUM = 2 on A2), and with the tiling's shareMode 0 every
    instance's L1/L0C allocation restarts at the same shared start (TPipe AuxShareBufStart): the
    instances take turns (End() between objects), they do not add up. The API may double-buffer C
    (dbL0C = 2) only within the SetBufferSpace budget, which op_host sets to budget.l0c."""
    assert base.l0c_bytes == base.base_m * base.base_n * 4 <= budget.l0c


def check_grid(grid, cores: int) -> None:
    """Blocks: at most `cores`, none empty, 16-granular boundaries, nothing past the used cores."""
    assert 1 <= grid.used_cores <= cores
    assert grid.used_cores == grid.m_blocks * grid.n_blocks
    for core in range(grid.used_cores):
        m0, ml, n0, nl = grid.block(core)
        assert ml > 0 and nl > 0
        assert m0 % CUBE == 0 or m0 == 0
        assert n0 % CUBE == 0  # 32-byte column boundaries for float16 and float32
    for core in range(grid.used_cores, cores + 3):
        assert grid.block(core) == (0, 0, 0, 0)
    assert_exact_cover((grid.m, grid.n), [grid.block(c) for c in range(grid.used_cores)])


def check_fused(plan, hw, cores: int, objects: int) -> None:
    """Every invariant of a fused row stage."""
    tm = __import__("mindpet._native", fromlist=["tiling"]).tiling
    grid = plan.grid
    check_grid(grid, cores)
    budget = tm.shared_budget(hw, objects)
    for base in plan.gemms:
        check_base(base, budget)
        assert base.m == plan.chunk_m
    # UB: every buffer 32-byte sized, total (with its copies) as recorded and within budget.
    total = 0
    for row_bytes, fixed_bytes, count in plan.ub_buffers:
        assert row_bytes % UB_ALIGN == 0 and fixed_bytes % UB_ALIGN == 0 and count in (1, 2)
        total += count * (row_bytes * plan.chunk_m + fixed_bytes)
    assert total == plan.ub_bytes
    assert plan.ub_bytes <= hw.ub_bytes - hw.ub_reserve_bytes
    # every object of the kernel fits L0C even if none of them shared it with another
    assert objects * max(b.l0c_bytes for b in plan.gemms) <= hw.l0c_bytes
    assert plan.workspace_bytes % WS_ALIGN == 0
    assert plan.chunk_m == grid.block_m or plan.chunk_m % CUBE == 0
    # The stage output [m, n] is written exactly once: epilogue tiles over all used cores.
    epi = plan.epilogue_gemm
    assert plan.n_is_block[epi]
    assert_exact_cover((grid.m, grid.n),
                       [t for c in range(grid.used_cores) for t in plan.tiles(c, epi)])
    # Row outputs of fixed-width gemms (u, g, z, t, q ...) are written once by the writer cores.
    for g, (base, is_block) in enumerate(zip(plan.gemms, plan.n_is_block)):
        if is_block:
            continue
        writers = [c for c in range(grid.used_cores) if grid.writes_row_outputs(c)]
        assert len(writers) == grid.m_blocks
        assert_exact_cover((grid.m, base.n), [t for c in writers for t in plan.tiles(c, g)])
    # Chunks partition each block.
    for c in range(grid.used_cores):
        m0, ml, n0, nl = grid.block(c)
        chunks = plan.chunks(c)
        assert sum(ch[1] for ch in chunks) == ml
        assert all(ch[2] == n0 and ch[3] == nl for ch in chunks)
    for c in range(grid.used_cores, cores + 2):
        assert plan.chunks(c) == [] and plan.tiles(c, epi) == []


def check_gemm_plan(plan, hw, cores: int, objects: int) -> None:
    tm = __import__("mindpet._native", fromlist=["tiling"]).tiling
    check_grid(plan.grid, cores)
    check_base(plan.base, tm.shared_budget(hw, objects))
    assert_exact_cover((plan.grid.m, plan.grid.n),
                       [t for c in range(plan.grid.used_cores) for t in plan.tiles(c)])


def check_column_sum(plan, hw, cores: int) -> None:
    assert 1 <= plan.used_cores <= cores
    ranges = [plan.range(c) for c in range(plan.used_cores)]
    assert_exact_cover((1, plan.cols), [(0, 1, n0, nl) for _, _, n0, nl in ranges])
    assert all(n0 % CUBE == 0 and nl > 0 for _, _, n0, nl in ranges)
    assert plan.range(plan.used_cores) == (0, 0, 0, 0)
    assert plan.ub_bytes <= hw.ub_bytes - hw.ub_reserve_bytes
    assert plan.tile_cols % CUBE == 0 and 1 <= plan.tile_rows <= plan.rows


def describe(plan) -> tuple:
    """A hashable summary of a fused plan, for determinism checks."""
    g = plan.grid
    return ((g.block_m, g.block_n, g.m_blocks, g.n_blocks, g.used_cores), plan.chunk_m,
            tuple((b.base_m, b.base_n, b.base_k, b.depth_a1) for b in plan.gemms),
            tuple(plan.ub_buffers), plan.ub_bytes, plan.workspace_bytes, plan.elem_tile)
