"""NumPy emulation of the data flow of the six Ascend C kernels (ascendc/op_kernel/
mindpet_lora_linear.cpp, mindpet_lora_linear_grad.cpp, mindpet_adapter.cpp, mindpet_adapter_grad.cpp,
mindpet_low_rank_adapter.cpp, mindpet_low_rank_adapter_grad.cpp).

The kernels cannot be compiled here (no CANN). This transcribes, line by line, what each vector
core does with the plan op_host hands it (the pure-C++ plan of mindpet._native.tiling): its block,
its chunks, which GM region each matmul writes (row writer: the global rows; others: the private
chunk), the workspace byte offsets, the boxes of the vector passes, the UB buffers they use, and
stage 2 (weight gradients, column sums). Cores run interleaved one step at a time, so two cores
sharing a workspace region would corrupt each other's results. What this does NOT check: the
Ascend C API itself (signatures, synchronisation, Matmul behaviour) - see ascendc/README.md.
Keep it in step with the kernels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

UB_ALIGN = 32
WS_ALIGN = 512  # every GM workspace region starts on a 512-byte boundary (mindpet::tiling::WsRegion)


def ws_region(rows: int, row_bytes: int) -> int:
    """mindpet::tiling::WsRegion: bytes of a workspace region, rounded up to WS_ALIGN."""
    return -(-rows * row_bytes // WS_ALIGN) * WS_ALIGN


@dataclass
class Gm:
    """A GlobalTensor: a flat device buffer and an element offset into it."""
    buf: np.ndarray
    off: int = 0

    def __getitem__(self, i: int) -> "Gm":
        return Gm(self.buf, self.off + int(i))


def _index(g: Gm, rows: int, cols: int, ld: int) -> np.ndarray:
    return g.off + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]


def rows_from_gm(g: Gm, rows: int, cols: int, ld: int) -> np.ndarray:
    return g.buf[_index(g, rows, cols, ld)].astype(np.float64)  # out of range raises


def rows_to_gm(g: Gm, rows: int, cols: int, ld: int, value: np.ndarray) -> None:
    g.buf[_index(g, rows, cols, ld)] = value.astype(g.buf.dtype)


def iterate_all(c: Gm, a: Gm, b: Gm, shape, org, trans_a=False, trans_b=False, bias: Optional[Gm] = None,
                atomic: int = 0):
    """Matmul IterateAll to GM: C[m, n] = op(A) op(B) (+ bias); org = SetOrgShape(M, N, Ka, Kb);
    atomic = 1 (enAtomic AtomicAdd): C[m, n] += op(A) op(B)."""
    m, n, k = shape
    org_m, org_n, org_ka, org_kb = org
    lhs = rows_from_gm(a, k, m, org_m).T if trans_a else rows_from_gm(a, m, k, org_ka)
    rhs = rows_from_gm(b, n, k, org_kb).T if trans_b else rows_from_gm(b, k, n, org_n)
    out = lhs @ rhs
    if bias is not None:
        out = out + rows_from_gm(bias, 1, n, n)
    if atomic:
        assert atomic == 1
        out = out + rows_from_gm(c, m, n, org_n)
    rows_to_gm(c, m, n, org_n, out)


def boxes(base, rows: int, cols: int) -> Iterator[tuple]:
    """TileOf over a relative area {0, rows, 0, cols}: (m0, m_len, n0, n_len), row-major."""
    for m0 in range(0, rows, base.base_m):
        for n0 in range(0, cols, base.base_n):
            yield m0, min(base.base_m, rows - m0), n0, min(base.base_n, cols - n0)


def check_box_buffer(plan, ub_index: int, gemm: int, elem_bytes: int, count: int = 2) -> None:
    """The kernel sizes buffer ub_index for `count` boxes of gemm `gemm`: the plan must agree."""
    base = plan.gemms[gemm]
    row = -(-base.base_n * elem_bytes // UB_ALIGN) * UB_ALIGN
    assert tuple(plan.ub_buffers[ub_index]) == (0, base.base_m * row, count), (ub_index, gemm)


# ---- activations (float64 references of ops/CONTRACTS.md) -------------------------------------------

def act(code: int, z: np.ndarray) -> np.ndarray:
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    c = np.sqrt(2.0 / np.pi)
    return {0: lambda: z, 1: lambda: np.maximum(z, 0.0),
            2: lambda: 0.5 * z * (1.0 + np.tanh(c * (z + 0.044715 * z ** 3))),
            4: lambda: sig(z), 5: lambda: np.tanh(z), 6: lambda: z * sig(z)}[code]()


def act_grad(code: int, z: np.ndarray) -> np.ndarray:
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    c = np.sqrt(2.0 / np.pi)
    if code == 2:
        th = np.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * (1 + th) + 0.5 * z * (1 - th ** 2) * c * (1 + 3 * 0.044715 * z ** 2)
    return {0: lambda: np.ones_like(z), 1: lambda: (z > 0).astype(z.dtype),
            4: lambda: sig(z) * (1 - sig(z)), 5: lambda: 1 - np.tanh(z) ** 2,
            6: lambda: sig(z) * (1 + z * (1 - sig(z)))}[code]()


# ---- the shared helpers of mindpet_kernel_common.h ----------------------------------------------

def private_region(global_bytes: int, core: int, per_core_bytes: int) -> int:
    return global_bytes + core * per_core_bytes


def add_residual(base, rows, cols, out: Gm, res: Gm, ld: int) -> None:
    for m0, ml, n0, nl in boxes(base, rows, cols):
        off = m0 * ld + n0
        rows_to_gm(out[off], ml, nl, ld, rows_from_gm(out[off], ml, nl, ld) + rows_from_gm(res[off], ml, nl, ld))


def multiply_rows(base, rows, cols, out: Gm, other: Gm, ld: int) -> None:
    for m0, ml, n0, nl in boxes(base, rows, cols):
        off = m0 * ld + n0
        rows_to_gm(out[off], ml, nl, ld, rows_from_gm(out[off], ml, nl, ld) * rows_from_gm(other[off], ml, nl, ld))


def scale_rows(base, rows, cols, src: Gm, dst: Gm, ld: int, scale: float) -> None:
    for m0, ml, n0, nl in boxes(base, rows, cols):
        off = m0 * ld + n0
        rows_to_gm(dst[off], ml, nl, ld, scale * rows_from_gm(src[off], ml, nl, ld))


def multiply_flat(dst: Gm, a: Gm, b: Gm, length: int, tile: int) -> None:
    """MultiplyFlat: dst[0, len) = a * b in flat tiles of `tile` elements."""
    assert tile > 0
    for i in range(0, length, tile):
        n = min(tile, length - i)
        rows_to_gm(dst[i], 1, n, n, rows_from_gm(a[i], 1, n, n) * rows_from_gm(b[i], 1, n, n))


def check_elem_buffer(plan, ub_index: int, elem_bytes: int) -> None:
    """The kernel sizes queue ub_index for flat tiles of plan.elem_tile elements."""
    row = -(-plan.elem_tile * elem_bytes // UB_ALIGN) * UB_ALIGN
    assert plan.elem_tile > 0 and tuple(plan.ub_buffers[ub_index]) == (0, row, 2), ub_index


def activate_rows(base, rows, cols, src: Gm, dst: Gm, ld: int, code: int) -> None:
    for m0, ml, n0, nl in boxes(base, rows, cols):
        off = m0 * ld + n0
        rows_to_gm(dst[off], ml, nl, ld, act(code, rows_from_gm(src[off], ml, nl, ld)))


def act_grad_rows(base, rows, cols, g: Gm, z: Gm, a_out: Gm, write_a: bool, ld: int, code: int) -> None:
    for m0, ml, n0, nl in boxes(base, rows, cols):
        off = m0 * ld + n0
        zz = rows_from_gm(z[off], ml, nl, ld)
        if write_a:
            rows_to_gm(a_out[off], ml, nl, ld, act(code, zz))
        rows_to_gm(g[off], ml, nl, ld, rows_from_gm(g[off], ml, nl, ld) * act_grad(code, zz))


def weight_grad(plan, core: int, a_t: Gm, b: Gm, c: Gm, org=None) -> None:
    """WeightGrad: C[block] = A^T B over all rows; org: the object's leading dimensions (op_host
    io for an object of its own, SetOrgShape(grid.m, grid.n, k) for a shared one)."""
    m0, ml, n0, nl = plan.grid.block(core)
    if ml == 0:
        return
    org = org or (plan.grid.m, plan.grid.n, plan.base.k, plan.base.k)
    assert ml <= plan.base.m and nl <= plan.base.n  # within the registered single-core shape
    iterate_all(c[m0 * plan.grid.n + n0], a_t[m0], b[n0], (ml, nl, plan.base.k), org, trans_a=True)


def column_sum(plan, core: int, src: Gm, out: Gm) -> None:
    _, rows, n0, nl = plan.range(core)
    if nl:
        rows_to_gm(out[n0], 1, nl, nl, rows_from_gm(src[n0], rows, nl, plan.cols).sum(axis=0, keepdims=True))


def run_interleaved(cores: list[Callable[[], Iterator[None]]]) -> None:
    """Run the per-core generators one step at a time, round robin (cores race for GM)."""
    live = [c() for c in cores]
    while live:
        live = [g for g in live if next(g, StopIteration) is not StopIteration]


def workspace(plan_workspace_bytes: int, dt: int, dtype) -> np.ndarray:
    assert plan_workspace_bytes % dt == 0
    return np.full(plan_workspace_bytes // dt, np.nan, dtype=dtype)  # NaN: reading unwritten data shows


# ---- the kernels ------------------------------------------------------------------------------------

class Device:
    """Float32 GM tensors of one call (the kernels' T = float32) and the workspace."""

    def __init__(self, workspace_bytes: int, dt: int = 4):
        self.dt = dt
        self.ws = Gm(workspace(workspace_bytes, dt, np.float32))

    @staticmethod
    def tensor(value: np.ndarray) -> Gm:
        return Gm(np.ascontiguousarray(value, np.float32).ravel().copy())

    @staticmethod
    def output(*shape: int) -> Gm:
        return Gm(np.full(int(np.prod(shape)), np.nan, np.float32))

    def at(self, byte_offset: int) -> Gm:
        """The workspace region starting at byte_offset (512-byte aligned, as the kernels lay it out)."""
        assert byte_offset % WS_ALIGN == 0, f"workspace region at {byte_offset} is not {WS_ALIGN}-byte aligned"
        return self.ws[byte_offset // self.dt]


def lora_linear_forward(plans, cores: int, x, w, bias, a, b, mask, scale: float):
    """mindpet_lora_linear.cpp; bias / mask None when absent (has_bias / has_mask 0); returns y, u."""
    p = plans["forward"]
    check_box_buffer(p, 0, 1, 4)                # uQ_ (s u boxes)
    if mask is not None:
        for i in (2, 3, 4):
            check_elem_buffer(p, i, 4)          # xQ_, mQ_, oQ_
    m, k = x.shape
    n, r = w.shape[0], a.shape[0]
    assert (p.grid.m, p.grid.n, p.gemms[0].k, p.gemms[1].n) == (m, n, k, r)
    dev = Device(p.workspace_bytes)
    dt = dev.dt
    x_, w_, a_, b_ = map(dev.tensor, (x, w, a, b))
    bias_ = dev.tensor(bias) if bias is not None else None
    mask_ = dev.tensor(mask) if mask is not None else dev.tensor(np.full(1, np.nan))
    y_, u_ = dev.output(m, n), dev.output(m, r)

    def core_fn(core):
        def steps():
            if p.grid.block(core)[1] == 0:
                return
            su_bytes = ws_region(p.chunk_m, r * dt)
            xd_bytes = ws_region(p.chunk_m, k * dt) if mask is not None else 0
            mine = private_region(0, core, su_bytes + xd_bytes)
            su_mine, xd_mine = dev.at(mine), dev.at(mine + su_bytes)
            writer = p.grid.writes_row_outputs(core)
            for m0, ml, n0, nl in p.chunks(core):
                xin = x_[m0 * k]
                if mask is not None:
                    multiply_flat(xd_mine, x_[m0 * k], mask_[m0 * k], ml * k, p.elem_tile); yield
                    xin = xd_mine
                u_dst = u_[m0 * r] if writer else su_mine
                iterate_all(u_dst, xin, a_, (ml, r, k), (m, r, k, k), trans_b=True); yield
                scale_rows(p.gemms[1], ml, r, u_dst, su_mine, r, scale); yield
                off = m0 * n + n0
                iterate_all(y_[off], x_[m0 * k], w_[n0 * k], (ml, nl, k), (m, n, k, k), trans_b=True,
                            bias=bias_[n0] if bias_ is not None else None); yield
                iterate_all(y_[off], su_mine, b_[n0 * r], (ml, nl, r), (m, n, r, r), trans_b=True, atomic=1); yield
        return steps

    run_interleaved([core_fn(c) for c in range(cores)])
    return y_.buf.reshape(m, n), u_.buf.reshape(m, r)


def lora_linear_backward(plans, cores: int, dy, x, w, a, b, u, mask, scale: float):
    """mindpet_lora_linear_grad.cpp; mask None when absent; returns dx, d_lora_a, d_lora_b."""
    p = plans["dx"]
    check_box_buffer(p, 0, 1, 4)                # gQ_ (s g, s u boxes)
    if mask is not None:
        for i in (3, 4, 5):
            check_box_buffer(p, i, 2, 4)        # cQ_, mQ_, oQ_
        for i in (6, 7, 8):
            check_elem_buffer(p, i, 4)          # exQ_, emQ_, eoQ_
    m, n = dy.shape
    k, r = x.shape[1], a.shape[0]
    assert (p.grid.m, p.grid.n, p.gemms[0].k, p.gemms[1].n) == (m, k, n, r)
    # one Matmul object for dA and dB: one base, covering every block of both grids
    pa, pb = plans["d_lora_a"], plans["d_lora_b"]
    for field in ("m", "n", "k", "base_m", "base_n", "base_k", "l1_bytes"):
        assert getattr(pa.base, field) == getattr(pb.base, field), field
    dev = Device(p.workspace_bytes)
    dt = dev.dt
    dy_, x_, w_, a_, b_, u_ = map(dev.tensor, (dy, x, w, a, b, u))
    mask_ = dev.tensor(mask) if mask is not None else dev.tensor(np.full(1, np.nan))
    dx_, da_, db_ = dev.output(m, k), dev.output(r, k), dev.output(n, r)
    mr = ws_region(m, r * dt)
    sg_all, su_all, xd_all = dev.at(0), dev.at(mr), dev.at(2 * mr)
    global_bytes = 2 * mr + (ws_region(m, k * dt) if mask is not None else 0)

    def stage1(core):
        def steps():
            if p.grid.block(core)[1] == 0:
                return
            sg_mine = dev.at(private_region(global_bytes, core, ws_region(p.chunk_m, r * dt)))
            writer = p.grid.writes_row_outputs(core)
            for m0, ml, n0, nl in p.chunks(core):
                sg = sg_all[m0 * r] if writer else sg_mine
                iterate_all(sg, dy_[m0 * n], b_, (ml, r, n), (m, r, n, n)); yield
                scale_rows(p.gemms[1], ml, r, sg, sg, r, scale); yield
                if writer:
                    scale_rows(p.gemms[1], ml, r, u_[m0 * r], su_all[m0 * r], r, scale); yield
                    if mask is not None:
                        multiply_flat(xd_all[m0 * k], x_[m0 * k], mask_[m0 * k], ml * k, p.elem_tile); yield
                off = m0 * k + n0
                iterate_all(dx_[off], sg, a_[n0], (ml, nl, r), (m, k, r, r)); yield
                if mask is not None:
                    multiply_rows(p.gemms[2], ml, nl, dx_[off], mask_[off], k); yield
                iterate_all(dx_[off], dy_[m0 * n], w_[n0], (ml, nl, n), (m, k, n, n), atomic=1); yield
        return steps

    def stage2(core):
        def steps():
            xd = xd_all if mask is not None else x_
            weight_grad(pa, core, sg_all, xd, da_); yield
            weight_grad(pb, core, dy_, su_all, db_); yield
        return steps

    run_interleaved([stage1(c) for c in range(cores)])
    run_interleaved([stage2(c) for c in range(cores)])  # after SyncAll
    return dx_.buf.reshape(m, k), da_.buf.reshape(r, k), db_.buf.reshape(n, r)


def adapter_forward(plans, cores: int, h, wd, bd, wu, bu, code: int):
    """mindpet_adapter.cpp; returns y, z."""
    p = plans["forward"]
    check_box_buffer(p, 0, 0, 4)                # zQ_
    check_box_buffer(p, 1, 0, 4)                # f32_ (z32, tmp)
    for i in (3, 4, 5):
        check_box_buffer(p, i, 1, 4)            # cQ_, rQ_, oQ_
    check_box_buffer(p, 6, 0, 4, count=1)       # y32_ (act(z): Erf may not run in place)
    m, d = h.shape
    b = wd.shape[0]
    assert (p.grid.m, p.grid.n, p.gemms[0].n) == (m, d, b)
    dev = Device(p.workspace_bytes)
    dt = dev.dt
    h_, wd_, bd_, wu_, bu_ = map(dev.tensor, (h, wd, bd, wu, bu))
    y_, z_ = dev.output(m, d), dev.output(m, b)

    def core_fn(core):
        def steps():
            if p.grid.block(core)[1] == 0:
                return
            a_mine = dev.at(private_region(0, core, ws_region(p.chunk_m, b * dt)))
            writer = p.grid.writes_row_outputs(core)
            for m0, ml, n0, nl in p.chunks(core):
                z = z_[m0 * b] if writer else a_mine
                iterate_all(z, h_[m0 * d], wd_, (ml, b, d), (m, b, d, d), trans_b=True, bias=bd_); yield
                activate_rows(p.gemms[0], ml, b, z, a_mine, b, code); yield
                off = m0 * d + n0
                iterate_all(y_[off], a_mine, wu_[n0 * b], (ml, nl, b), (m, d, b, b), trans_b=True, bias=bu_[n0])
                yield
                add_residual(p.gemms[1], ml, nl, y_[off], h_[off], d); yield
        return steps

    run_interleaved([core_fn(c) for c in range(cores)])
    return y_.buf.reshape(m, d), z_.buf.reshape(m, b)


def low_rank_adapter_forward(plans, cores: int, h, ldl, ldr, bd, lul, lur, bu, code: int):
    """mindpet_low_rank_adapter.cpp; returns y, t, z, q."""
    p = plans["forward"]
    check_box_buffer(p, 2, 1, 4)                # zQ_
    check_box_buffer(p, 3, 1, 4)                # f32_ (z32, tmp)
    for i in (7, 8, 9):
        check_box_buffer(p, i, 3, 4)            # cQ_, rQ_, oQ_
    check_box_buffer(p, 10, 1, 4, count=1)      # y32_ (act(z): Erf may not run in place)
    m, d = h.shape
    r, b = ldl.shape[1], ldr.shape[1]
    assert (p.grid.m, p.grid.n, p.gemms[0].n, p.gemms[1].n) == (m, d, r, b)
    dev = Device(p.workspace_bytes)
    h_, ldl_, ldr_, bd_, lul_, lur_, bu_ = map(dev.tensor, (h, ldl, ldr, bd, lul, lur, bu))
    y_, t_, z_, q_ = dev.output(m, d), dev.output(m, r), dev.output(m, b), dev.output(m, r)
    dt = dev.dt

    def core_fn(core):
        def steps():
            if p.grid.block(core)[1] == 0:
                return
            chunk_r, chunk_b = ws_region(p.chunk_m, r * dt), ws_region(p.chunk_m, b * dt)
            mine = private_region(0, core, 2 * chunk_r + chunk_b)
            t_mine, a_mine, q_mine = dev.at(mine), dev.at(mine + chunk_r), dev.at(mine + chunk_r + chunk_b)
            writer = p.grid.writes_row_outputs(core)
            for m0, ml, n0, nl in p.chunks(core):
                t = t_[m0 * r] if writer else t_mine
                z = z_[m0 * b] if writer else a_mine
                q = q_[m0 * r] if writer else q_mine
                iterate_all(t, h_[m0 * d], ldl_, (ml, r, d), (m, r, d, d)); yield
                iterate_all(z, t, ldr_, (ml, b, r), (m, b, r, r), bias=bd_); yield
                activate_rows(p.gemms[1], ml, b, z, a_mine, b, code); yield
                iterate_all(q, a_mine, lul_, (ml, r, b), (m, r, b, b)); yield
                off = m0 * d + n0
                iterate_all(y_[off], q, lur_[n0], (ml, nl, r), (m, d, r, r), bias=bu_[n0]); yield
                add_residual(p.gemms[3], ml, nl, y_[off], h_[off], d); yield
        return steps

    run_interleaved([core_fn(c) for c in range(cores)])
    return (y_.buf.reshape(m, d), t_.buf.reshape(m, r), z_.buf.reshape(m, b), q_.buf.reshape(m, r))


def adapter_backward(plans, cores: int, dy, h, wd, wu, z, code: int):
    """mindpet_adapter_grad.cpp; returns dh, dwd, dbd, dwu, dbu."""
    p = plans["dh"]
    for i in (0, 1):
        check_box_buffer(p, i, 0, 4)            # gQ_, zQ_
    for i in (2, 3):
        check_box_buffer(p, i, 0, 4)            # f32a_, f32b_ (float32)
    for i in (6, 7, 8):
        check_box_buffer(p, i, 1, 4)            # cQ_, rQ_, oQ_
    m, d = dy.shape
    b = wd.shape[0]
    assert (p.grid.m, p.grid.n, p.gemms[0].n) == (m, d, b)
    dev = Device(p.workspace_bytes)
    dt = dev.dt
    dy_, h_, wd_, wu_, z_ = map(dev.tensor, (dy, h, wd, wu, z))
    dh_, dwd_, dbd_, dwu_, dbu_ = dev.output(m, d), dev.output(b, d), dev.output(b), dev.output(d, b), dev.output(d)
    mb = ws_region(m, b * dt)
    dz_all, a_all = dev.at(0), dev.at(mb)

    def stage1(core):
        def steps():
            if p.grid.block(core)[1] == 0:
                return
            dz_mine = dev.at(private_region(2 * mb, core, ws_region(p.chunk_m, b * dt)))
            writer = p.grid.writes_row_outputs(core)
            for m0, ml, n0, nl in p.chunks(core):
                dz = dz_all[m0 * b] if writer else dz_mine
                iterate_all(dz, dy_[m0 * d], wu_, (ml, b, d), (m, b, d, d)); yield
                act_grad_rows(p.gemms[0], ml, b, dz, z_[m0 * b], a_all[m0 * b], writer, b, code); yield
                off = m0 * d + n0
                iterate_all(dh_[off], dz, wd_[n0], (ml, nl, b), (m, d, b, b)); yield
                add_residual(p.gemms[1], ml, nl, dh_[off], dy_[off], d); yield
        return steps

    def stage2(core):
        def steps():
            weight_grad(plans["d_w_up"], core, dy_, a_all, dwu_, org=(d, b, m, m)); yield
            weight_grad(plans["d_w_down"], core, dz_all, h_, dwd_, org=(b, d, m, m)); yield
            column_sum(plans["d_b_up"], core, dy_, dbu_); yield
            column_sum(plans["d_b_down"], core, dz_all, dbd_); yield
        return steps

    run_interleaved([stage1(c) for c in range(cores)])
    run_interleaved([stage2(c) for c in range(cores)])  # after SyncAll
    return (dh_.buf.reshape(m, d), dwd_.buf.reshape(b, d), dbd_.buf, dwu_.buf.reshape(d, b), dbu_.buf)


def low_rank_adapter_backward(plans, cores: int, dy, h, ldl, ldr, lul, lur, t, z, q, code: int):
    """mindpet_low_rank_adapter_grad.cpp; returns dh, dldl, dldr, dbd, dlul, dlur, dbu."""
    p = plans["dh"]
    for i in (2, 3):
        check_box_buffer(p, i, 1, 4)            # gQ_, zQ_
    for i in (4, 5):
        check_box_buffer(p, i, 1, 4)            # f32a_, f32b_ (float32)
    for i in (9, 10, 11):
        check_box_buffer(p, i, 3, 4)            # cQ_, rQ_, oQ_
    m, d = dy.shape
    r, b = ldl.shape[1], ldr.shape[1]
    g = p.gemms
    assert (p.grid.m, p.grid.n, g[0].n, g[1].n) == (m, d, r, b)
    # the registered tiling of each shared stage-1 object covers every use of it
    rank = g[0] if g[0].k >= g[2].k else g[2]
    wide = g[1] if g[1].n >= g[3].n else g[3]
    dev = Device(p.workspace_bytes)
    dt = dev.dt
    dy_, h_, ldl_, ldr_, lul_, lur_, t_, z_, q_ = map(dev.tensor, (dy, h, ldl, ldr, lul, lur, t, z, q))
    dh_, dbd_, dbu_ = dev.output(m, d), dev.output(b), dev.output(d)
    dldl_, dldr_, dlul_, dlur_ = dev.output(d, r), dev.output(r, b), dev.output(b, r), dev.output(r, d)
    mr, mb = ws_region(m, r * dt), ws_region(m, b * dt)
    dq_all, dt_all, dz_all, a_all = dev.at(0), dev.at(mr), dev.at(2 * mr), dev.at(2 * mr + mb)

    def fits(obj, shape):
        assert shape[0] <= obj.m and shape[1] <= obj.n and shape[2] <= obj.k, (shape, obj.m, obj.n, obj.k)
        return shape

    def stage1(core):
        def steps():
            if p.grid.block(core)[1] == 0:
                return
            chunk_r, chunk_b = ws_region(p.chunk_m, r * dt), ws_region(p.chunk_m, b * dt)
            mine = private_region(2 * mr + 2 * mb, core, 2 * chunk_r + chunk_b)
            dq_mine, dz_mine, dt_mine = dev.at(mine), dev.at(mine + chunk_r), dev.at(mine + chunk_r + chunk_b)
            writer = p.grid.writes_row_outputs(core)
            for m0, ml, n0, nl in p.chunks(core):
                dq = dq_all[m0 * r] if writer else dq_mine
                dz = dz_all[m0 * b] if writer else dz_mine
                dtt = dt_all[m0 * r] if writer else dt_mine
                iterate_all(dq, dy_[m0 * d], lur_, fits(rank, (ml, r, d)), (m, r, d, d), trans_b=True); yield
                iterate_all(dz, dq, lul_, fits(wide, (ml, b, r)), (m, b, r, r), trans_b=True); yield
                act_grad_rows(g[1], ml, b, dz, z_[m0 * b], a_all[m0 * b], writer, b, code); yield
                iterate_all(dtt, dz, ldr_, fits(rank, (ml, r, b)), (m, r, b, b), trans_b=True); yield
                off = m0 * d + n0
                iterate_all(dh_[off], dtt, ldl_[n0 * r], fits(wide, (ml, nl, r)), (m, d, r, r), trans_b=True)
                yield
                add_residual(g[3], ml, nl, dh_[off], dy_[off], d); yield
        return steps

    def stage2(core):
        def steps():
            weight_grad(plans["d_down_left"], core, h_, dt_all, dldl_); yield
            weight_grad(plans["d_up_left"], core, a_all, dq_all, dlul_); yield
            weight_grad(plans["d_down_right"], core, t_, dz_all, dldr_); yield
            weight_grad(plans["d_up_right"], core, q_, dy_, dlur_); yield
            column_sum(plans["d_b_up"], core, dy_, dbu_); yield
            column_sum(plans["d_b_down"], core, dz_all, dbd_); yield
        return steps

    run_interleaved([stage1(c) for c in range(cores)])
    run_interleaved([stage2(c) for c in range(cores)])  # after SyncAll
    return (dh_.buf.reshape(m, d), dldl_.buf.reshape(d, r), dldr_.buf.reshape(r, b), dbd_.buf,
            dlul_.buf.reshape(b, r), dlur_.buf.reshape(r, d), dbu_.buf)
