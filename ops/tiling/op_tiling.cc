// Tiling of the three fused ops (ops/CONTRACTS.md), forward and backward, built from the generic
// fused-stage planner. Each spec lists the matmul objects of the stage in kernel order, the UB
// buffers the kernel allocates (same order as in ascendc/op_kernel) and the GM workspace it uses.
#include "mindpet/tiling.h"

namespace mindpet {
namespace tiling {
namespace {

constexpr uint32_t kF32 = 4;

FusedGemmSpec BlockGemm(uint32_t k, uint32_t dt, bool bias = false) {
  return {true, 0, k, dt, dt, bias};
}
FusedGemmSpec FixedGemm(uint32_t n, uint32_t k, uint32_t dt, bool bias = false) {
  return {false, n, k, dt, dt, bias};
}
UbSpec Tile(uint32_t gemm, uint32_t bytes, uint32_t count) { return {UbKind::kTile, gemm, 0, bytes, count}; }
UbSpec Rows(uint32_t cols, uint32_t bytes, uint32_t count) {
  return {UbKind::kChunkRows, 0, cols, bytes, count};
}
UbSpec Elems(uint32_t bytes, uint32_t count) { return {UbKind::kElemTile, 0, 0, bytes, count}; }

void AddUb(FusedSpec* s, const UbSpec& u) { s->ub[s->numUb++] = u; }
// GM workspace regions (kernel order): whole-stage regions of m rows / private regions of chunkM
// rows per used core, `rowBytes` wide.
void AddGlobalWs(FusedSpec* s, uint64_t rowBytes) { s->globalRowBytes[s->numGlobalRegions++] = rowBytes; }
void AddCoreWs(FusedSpec* s, uint64_t rowBytes) { s->coreRowBytes[s->numCoreRegions++] = rowBytes; }

bool ValidDtype(uint32_t dt) { return dt == 2 || dt == 4; }

// Stage "out = in W (+ s (in D) U)": the shared skeleton of the lora forward (in = x, out = y)
// and of the lora dx stage (in = dy, out = dx). kIn = reduction of the dense gemm.
FusedSpec LowRankPlusDense(uint32_t m, uint32_t nOut, uint32_t kIn, uint32_t rank, uint32_t dt,
                           bool bias) {
  FusedSpec s = {};
  s.m = m;
  s.n = nOut;
  s.numGemms = 3;
  s.epilogueGemm = 0;
  s.gemm[0] = BlockGemm(kIn, dt, bias);   // dense part, written to GM
  s.gemm[1] = FixedGemm(rank, kIn, dt);   // low-rank projection, to GM
  s.gemm[2] = BlockGemm(rank, dt);        // low-rank expansion, atomically added / masked
  AddUb(&s, Tile(1, dt, 2));              // boxes of the projection (scaled by s in GM)
  AddUb(&s, Rows(rank, dt, 1));           // unused by the GM-staged kernels (conservative)
  s.cost = {double(kIn) + rank, double(kIn) * rank + double(kIn) * dt, double(kIn) * dt};
  s.kernelObjects = 3;
  // The scaled projection goes through a per-core GM chunk: on A2 a vector result reaches the
  // cube only through GM, and a private region needs no cross-core ordering.
  AddCoreWs(&s, uint64_t(rank) * dt);
  return s;
}

// Adapter-style stage: gemm chain ending in a residual epilogue out = res + last + bias.
void AddResidualEpilogue(FusedSpec* s, uint32_t gemm, uint32_t dt) {
  AddUb(s, Tile(gemm, dt, 2));  // last gemm tiles (VECIN)
  AddUb(s, Tile(gemm, dt, 2));  // residual tiles
  AddUb(s, Tile(gemm, dt, 2));  // output tiles (VECOUT)
}

}  // namespace

Status PlanLoraLinearForward(const LoraLinearShape& s, const HardwareSpec& hw,
                             LoraLinearForwardTiling* out) {
  if (s.m == 0 || s.k == 0 || s.n == 0 || s.rank == 0 || !ValidDtype(s.dtypeBytes)) {
    return Status::kBadShape;
  }
  const uint32_t dt = s.dtypeBytes;
  FusedSpec f = LowRankPlusDense(s.m, s.n, s.k, s.rank, dt, s.hasBias != 0);
  if (s.dropout) {
    // x_d = x * mask for the chunk, written to a per-core workspace read by gemm[1].
    AddUb(&f, Elems(dt, 2));  // x
    AddUb(&f, Elems(dt, 2));  // mask
    AddUb(&f, Elems(dt, 2));  // x_d
    AddCoreWs(&f, uint64_t(s.k) * dt);  // x_d chunk
  }
  return PlanFused(f, hw, &out->y);
}

Status PlanLoraLinearBackward(const LoraLinearShape& s, const HardwareSpec& hw,
                              LoraLinearBackwardTiling* out) {
  if (s.m == 0 || s.k == 0 || s.n == 0 || s.rank == 0 || !ValidDtype(s.dtypeBytes)) {
    return Status::kBadShape;
  }
  const uint32_t dt = s.dtypeBytes;
  // A kernel defines at most 4 Matmul objects (REGIST_MATMUL_OBJ): dy W, dy B, (s g) A, and one
  // object for both weight gradients dA and dB (same reduction k = M; ShareGemmObject below).
  constexpr uint32_t kObjects = 4;
  FusedSpec f = LowRankPlusDense(s.m, s.k, s.n, s.rank, dt, false);
  f.kernelObjects = kObjects;
  AddUb(&f, Rows(s.rank, dt, 1));  // unused by the GM-staged kernel: s u goes box by box in ub[0]
  // whole-M workspace: s g [m, rank] and s u [m, rank] (before the private s g chunks)
  AddGlobalWs(&f, uint64_t(s.rank) * dt);
  AddGlobalWs(&f, uint64_t(s.rank) * dt);
  if (s.dropout) {
    AddUb(&f, Tile(2, dt, 2));  // (s g) A boxes, read back from dx (VECIN)
    AddUb(&f, Tile(2, dt, 2));  // mask boxes
    AddUb(&f, Tile(2, dt, 2));  // masked boxes (VECOUT), then dx += dy W (atomic add)
    AddUb(&f, Elems(dt, 2));    // x       } x_d = x * mask of the block rows,
    AddUb(&f, Elems(dt, 2));    // mask    } written once to the workspace
    AddUb(&f, Elems(dt, 2));    // x_d     } for dA
    AddGlobalWs(&f, uint64_t(s.k) * dt);  // x_d [m, k]
  }
  Status st = PlanFused(f, hw, &out->dx);
  if (st != Status::kOk) return st;
  st = PlanGemmShared(s.rank, s.k, s.m, dt, dt, hw, kObjects, &out->dA);
  if (st != Status::kOk) return st;
  st = PlanGemmShared(s.n, s.rank, s.m, dt, dt, hw, kObjects, &out->dB);
  if (st != Status::kOk) return st;
  // dA and dB run on one Matmul object: one base for the envelope of both grids.
  GemmPlan* weightGrads[2] = {&out->dA, &out->dB};
  return ShareGemmObject(weightGrads, 2, hw, kObjects);
}

Status PlanAdapterForward(const AdapterShape& s, const HardwareSpec& hw, AdapterForwardTiling* out) {
  if (s.m == 0 || s.d == 0 || s.bottleneck == 0 || !ValidDtype(s.dtypeBytes)) {
    return Status::kBadShape;
  }
  const uint32_t dt = s.dtypeBytes, b = s.bottleneck;
  FusedSpec f = {};
  f.m = s.m;
  f.n = s.d;
  f.numGemms = 2;
  f.epilogueGemm = 1;
  f.gemm[0] = FixedGemm(b, s.d, dt, true);  // z = h Wd^T + bd
  f.gemm[1] = BlockGemm(b, dt, true);       // a Wu^T + bu
  AddUb(&f, Tile(0, dt, 2));    // z boxes, read back from GM (saved z or the private a chunk)
  AddUb(&f, Tile(0, kF32, 2));  // float32 z and scratch of act()
  AddUb(&f, Rows(b, dt, 1));    // unused by the GM-staged kernel (conservative)
  AddResidualEpilogue(&f, 1, dt);
  AddUb(&f, Tile(0, kF32, 1));  // float32 act(z): Erf may not write over its source
  f.cost = {double(b), double(s.d) * b + double(s.d) * dt, double(b) * dt};
  f.kernelObjects = 2;
  AddCoreWs(&f, uint64_t(b) * dt);  // a chunk, operand of gemm[1]
  return PlanFused(f, hw, &out->y);
}

Status PlanAdapterBackward(const AdapterShape& s, const HardwareSpec& hw,
                           AdapterBackwardTiling* out) {
  if (s.m == 0 || s.d == 0 || s.bottleneck == 0 || !ValidDtype(s.dtypeBytes)) {
    return Status::kBadShape;
  }
  const uint32_t dt = s.dtypeBytes, b = s.bottleneck;
  constexpr uint32_t kObjects = 4;  // dy Wu, dz Wd, then dWu and dWd
  FusedSpec f = {};
  f.m = s.m;
  f.n = s.d;
  f.numGemms = 2;
  f.epilogueGemm = 1;
  f.gemm[0] = FixedGemm(b, s.d, dt);  // t = dy Wu
  f.gemm[1] = BlockGemm(b, dt);       // dz Wd
  AddUb(&f, Tile(0, dt, 2));    // t tiles (VECIN)
  AddUb(&f, Tile(0, dt, 2));    // z tiles
  AddUb(&f, Tile(0, kF32, 2));  // float32 z, t    } act / act'
  AddUb(&f, Tile(0, kF32, 2));  // float32 scratch }
  AddUb(&f, Rows(b, dt, 1));    // dz of the chunk (VECOUT operand)
  AddUb(&f, Rows(b, dt, 1));    // a of the chunk (to the workspace)
  AddResidualEpilogue(&f, 1, dt);
  f.cost = {double(b), double(s.d) * b + double(s.d) * dt, double(b) * dt};
  f.kernelObjects = kObjects;
  AddGlobalWs(&f, uint64_t(b) * dt);  // dz [m, b] } read by the weight-gradient gemms
  AddGlobalWs(&f, uint64_t(b) * dt);  // a [m, b]  }
  AddCoreWs(&f, uint64_t(b) * dt);    // dz chunk, operand of gemm[1]
  Status st = PlanFused(f, hw, &out->dh);
  if (st == Status::kOk) st = PlanGemmShared(s.d, b, s.m, dt, dt, hw, kObjects, &out->dWu);
  if (st == Status::kOk) st = PlanGemmShared(b, s.d, s.m, dt, dt, hw, kObjects, &out->dWd);
  if (st == Status::kOk) st = PlanColumnSum(s.m, s.d, dt, hw, &out->dbUp);
  if (st == Status::kOk) st = PlanColumnSum(s.m, b, dt, hw, &out->dbDown);
  return st;
}

Status PlanLowRankAdapterForward(const LowRankAdapterShape& s, const HardwareSpec& hw,
                                 LowRankAdapterForwardTiling* out) {
  if (s.m == 0 || s.d == 0 || s.bottleneck == 0 || s.rank == 0 || !ValidDtype(s.dtypeBytes)) {
    return Status::kBadShape;
  }
  const uint32_t dt = s.dtypeBytes, b = s.bottleneck, r = s.rank;
  FusedSpec f = {};
  f.m = s.m;
  f.n = s.d;
  f.numGemms = 4;
  f.epilogueGemm = 3;
  f.gemm[0] = FixedGemm(r, s.d, dt);      // t = h Ldl
  f.gemm[1] = FixedGemm(b, r, dt, true);  // z = t Ldr + bd
  f.gemm[2] = FixedGemm(r, b, dt);        // q = act(z) Lul
  f.gemm[3] = BlockGemm(r, dt, true);     // q Lur + bu
  AddUb(&f, Tile(0, dt, 2));    // t tiles (saved t)
  AddUb(&f, Rows(r, dt, 1));    // t chunk operand
  AddUb(&f, Tile(1, dt, 2));    // z tiles (saved z)
  AddUb(&f, Tile(1, kF32, 2));  // float32 z and scratch of act()
  AddUb(&f, Rows(b, dt, 1));    // a chunk operand
  AddUb(&f, Tile(2, dt, 2));    // q tiles (saved q)
  AddUb(&f, Rows(r, dt, 1));    // q chunk operand
  AddResidualEpilogue(&f, 3, dt);
  AddUb(&f, Tile(1, kF32, 1));  // float32 act(z): Erf may not write over its source
  f.cost = {double(r), double(s.d) * r + double(r) * b * 2 + double(s.d) * dt, double(r) * dt};
  f.kernelObjects = 4;
  AddCoreWs(&f, uint64_t(r) * dt);  // t chunk  } operands of gemm[1..3]
  AddCoreWs(&f, uint64_t(b) * dt);  // a chunk  }
  AddCoreWs(&f, uint64_t(r) * dt);  // q chunk  }
  return PlanFused(f, hw, &out->y);
}

Status PlanLowRankAdapterBackward(const LowRankAdapterShape& s, const HardwareSpec& hw,
                                  LowRankAdapterBackwardTiling* out) {
  if (s.m == 0 || s.d == 0 || s.bottleneck == 0 || s.rank == 0 || !ValidDtype(s.dtypeBytes)) {
    return Status::kBadShape;
  }
  const uint32_t dt = s.dtypeBytes, b = s.bottleneck, r = s.rank;
  // Budgets as if each of the eight gemms had its own matmul object (op_host uses the same
  // count); the kernel defines four (see ShareGemmObject below), so they are conservative.
  constexpr uint32_t kObjects = 8;
  FusedSpec f = {};
  f.m = s.m;
  f.n = s.d;
  f.numGemms = 4;
  f.epilogueGemm = 3;
  f.gemm[0] = FixedGemm(r, s.d, dt);  // dq = dy Lur^T
  f.gemm[1] = FixedGemm(b, r, dt);    // dq Lul^T -> dz = . * act'(z)
  f.gemm[2] = FixedGemm(r, b, dt);    // dt = dz Ldr^T
  f.gemm[3] = BlockGemm(r, dt);       // dt Ldl^T -> dh = dy + .
  AddUb(&f, Tile(0, dt, 2));    // dq tiles
  AddUb(&f, Rows(r, dt, 1));    // dq chunk operand
  AddUb(&f, Tile(1, dt, 2));    // dq Lul^T tiles
  AddUb(&f, Tile(1, dt, 2));    // z tiles
  AddUb(&f, Tile(1, kF32, 2));  // float32 z, t    } act / act'
  AddUb(&f, Tile(1, kF32, 2));  // float32 scratch }
  AddUb(&f, Rows(b, dt, 1));    // dz chunk operand (also a, staged to the workspace)
  AddUb(&f, Tile(2, dt, 2));    // dt tiles
  AddUb(&f, Rows(r, dt, 1));    // dt chunk operand
  AddResidualEpilogue(&f, 3, dt);
  f.cost = {double(r), double(s.d) * r + double(r) * b * 2 + double(s.d) * dt, double(r) * dt};
  f.kernelObjects = kObjects;
  AddGlobalWs(&f, uint64_t(r) * dt);  // dq [m, r]
  AddGlobalWs(&f, uint64_t(r) * dt);  // dt [m, r]
  AddGlobalWs(&f, uint64_t(b) * dt);  // dz [m, b]
  AddGlobalWs(&f, uint64_t(b) * dt);  // a [m, b]
  AddCoreWs(&f, uint64_t(r) * dt);    // dq chunk } operands
  AddCoreWs(&f, uint64_t(b) * dt);    // dz chunk }
  AddCoreWs(&f, uint64_t(r) * dt);    // dt chunk }
  Status st = PlanFused(f, hw, &out->dh);
  if (st == Status::kOk) st = PlanGemmShared(s.d, r, s.m, dt, dt, hw, kObjects, &out->dDownLeft);
  if (st == Status::kOk) st = PlanGemmShared(r, b, s.m, dt, dt, hw, kObjects, &out->dDownRight);
  if (st == Status::kOk) st = PlanGemmShared(b, r, s.m, dt, dt, hw, kObjects, &out->dUpLeft);
  if (st == Status::kOk) st = PlanGemmShared(r, s.d, s.m, dt, dt, hw, kObjects, &out->dUpRight);
  // The kernel defines at most 4 Matmul objects: two for the chained gemms of stage 1 (dq and dt
  // share one, dq Lul^T and dt Ldl^T the other: the kernel registers the larger of each pair) and
  // one per pair of weight gradients (n = rank: dLdl, dLul; m = rank: dLdr, dLur), planned for the
  // envelope of the pair. The budgets stay those of kObjects (op_host uses the same count).
  GemmPlan* byRankColumns[2] = {&out->dDownLeft, &out->dUpLeft};
  GemmPlan* byRankRows[2] = {&out->dDownRight, &out->dUpRight};
  if (st == Status::kOk) st = ShareGemmObject(byRankColumns, 2, hw, kObjects);
  if (st == Status::kOk) st = ShareGemmObject(byRankRows, 2, hw, kObjects);
  if (st == Status::kOk) st = PlanColumnSum(s.m, s.d, dt, hw, &out->dbUp);
  if (st == Status::kOk) st = PlanColumnSum(s.m, b, dt, hw, &out->dbDown);
  return st;
}

}  // namespace tiling
}  // namespace mindpet
