// Fused row stages and column sums (see mindpet/tiling.h).
#include <algorithm>

#include "mindpet/tiling.h"

namespace mindpet {
namespace tiling {
namespace {

constexpr uint32_t kMaxElemTile = 8192;
constexpr uint32_t kMinElemTile = 256;
constexpr uint32_t kMaxTileCols = 2048;
constexpr uint32_t kMaxTileRows = 64;

uint32_t RowBytes(uint32_t cols, uint32_t elemBytes) { return AlignUp(cols * elemBytes, kUbAlign); }

// UB bytes of one buffer spec for a given plan state; fills `buf`.
UbBuffer Resolve(const UbSpec& u, const FusedPlan& p) {
  UbBuffer b = {0, 0, u.count};
  switch (u.kind) {
    case UbKind::kTile: {
      const GemmBase& g = p.gemm[u.gemm];
      b.fixedBytes = g.baseM * RowBytes(g.baseN, u.elemBytes);
      break;
    }
    case UbKind::kChunkRows:
      b.rowBytes = RowBytes(u.cols, u.elemBytes);
      break;
    case UbKind::kElemTile:
      b.fixedBytes = RowBytes(p.elemTile, u.elemBytes);
      break;
    case UbKind::kFixed:
      b.fixedBytes = RowBytes(u.cols, u.elemBytes);
      break;
  }
  return b;
}

uint64_t UbTotal(const FusedPlan& p) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < p.numUb; ++i) {
    const UbBuffer& b = p.ub[i];
    total += uint64_t(b.count) * (uint64_t(b.rowBytes) * p.chunkM + b.fixedBytes);
  }
  return total;
}

// Whole-stage regions, then the private regions of every used core; each region 512-byte aligned
// (WsRegion), in the order the kernels lay them out.
uint64_t WorkspaceBytes(const FusedSpec& s, const FusedPlan& p) {
  uint64_t global = 0, perCore = 0;
  for (uint32_t i = 0; i < s.numGlobalRegions; ++i) global += WsRegion(s.m, s.globalRowBytes[i]);
  for (uint32_t i = 0; i < s.numCoreRegions; ++i) perCore += WsRegion(p.chunkM, s.coreRowBytes[i]);
  return global + uint64_t(p.grid.usedCores) * perCore;
}

bool ValidSpec(const FusedSpec& s) {
  if (s.m == 0 || s.n == 0 || s.numGemms == 0 || s.numGemms > kMaxGemms) return false;
  if (s.epilogueGemm >= s.numGemms || s.numUb > kMaxUbBuffers) return false;
  if (s.numGlobalRegions > kMaxWsRegions || s.numCoreRegions > kMaxWsRegions) return false;
  for (uint32_t i = 0; i < s.numGemms; ++i) {
    const FusedGemmSpec& g = s.gemm[i];
    if (g.k == 0 || (!g.nIsBlock && g.n == 0)) return false;
  }
  for (uint32_t i = 0; i < s.numUb; ++i) {
    const UbSpec& u = s.ub[i];
    if (u.count == 0 || u.elemBytes == 0) return false;
    if (u.kind == UbKind::kTile && u.gemm >= s.numGemms) return false;
  }
  return true;
}

}  // namespace

Status PlanFused(const FusedSpec& spec, const HardwareSpec& hw, FusedPlan* out) {
  if (hw.cores == 0) return Status::kNoCores;
  if (!ValidSpec(spec)) return Status::kBadShape;
  if (hw.ubBytes <= hw.ubReserveBytes) return Status::kOverBudget;
  const uint64_t ubBudget = hw.ubBytes - hw.ubReserveBytes;
  const GemmBudget full = SharedBudget(hw, std::max(spec.kernelObjects, spec.numGemms));
  bool needsElemTile = false;
  for (uint32_t i = 0; i < spec.numUb; ++i) needsElemTile |= spec.ub[i].kind == UbKind::kElemTile;

  FusedPlan p = {};
  p.grid = PlanGrid(spec.m, spec.n, hw.cores, spec.cost);
  p.numGemms = spec.numGemms;
  p.epilogueGemm = spec.epilogueGemm;
  p.numUb = spec.numUb;
  Status last = Status::kOverBudget;
  // The kTile buffers are boxes of the gemms' base tiles. When even the smallest chunk overflows
  // UB with the bases the L0 budgets allow, retry with smaller bases: the L0C cap halves (the
  // first pass is the full budget, so plans that fit are unchanged) down to one cube block.
  for (uint64_t l0cCap = full.l0c;; l0cCap /= 2) {
    GemmBudget budget = full;
    budget.l0c = l0cCap;
    // Largest chunk first; each step halves it (16-row granule) down to one cube block.
    for (uint32_t chunk = p.grid.blockM;;) {
      p.chunkM = chunk;
      bool basesOk = true;
      for (uint32_t i = 0; i < spec.numGemms && basesOk; ++i) {
        const FusedGemmSpec& g = spec.gemm[i];
        p.nIsBlock[i] = g.nIsBlock ? 1 : 0;
        const uint32_t n = g.nIsBlock ? p.grid.blockN : g.n;
        last = PlanGemmBase(chunk, n, g.k, g.inBytes, g.outBytes, g.bias, budget, &p.gemm[i]);
        basesOk = last == Status::kOk;
      }
      if (basesOk) {
        for (uint32_t tile = needsElemTile ? kMaxElemTile : 0;; tile /= 2) {
          p.elemTile = tile;
          for (uint32_t i = 0; i < spec.numUb; ++i) p.ub[i] = Resolve(spec.ub[i], p);
          p.ubBytes = UbTotal(p);
          if (p.ubBytes <= ubBudget) {
            p.workspaceBytes = WorkspaceBytes(spec, p);
            *out = p;
            return Status::kOk;
          }
          if (tile <= kMinElemTile) break;
        }
        last = Status::kOverBudget;
      }
      if (chunk <= kCubeBlock) break;
      chunk = AlignUp(chunk / 2, kCubeBlock);
    }
    if (l0cCap / 2 < uint64_t(kCubeBlock) * kCubeBlock * kAccBytes) break;
  }
  return last;
}

Status PlanColumnSum(uint32_t rows, uint32_t cols, uint32_t inBytes, const HardwareSpec& hw,
                     ColumnSumPlan* out) {
  if (hw.cores == 0) return Status::kNoCores;
  if (rows == 0 || cols == 0 || (inBytes != 2 && inBytes != 4)) return Status::kBadShape;
  if (hw.ubBytes <= hw.ubReserveBytes) return Status::kOverBudget;
  const uint64_t ubBudget = hw.ubBytes - hw.ubReserveBytes;
  ColumnSumPlan p = {};
  p.rows = rows;
  p.cols = cols;
  p.inBytes = inBytes;
  // 16-column granule: core boundaries fall on 32-byte (half) / 64-byte (float) boundaries.
  p.colsPerCore = MinU32(AlignUp(CeilDiv(cols, hw.cores), kCubeBlock), cols);
  p.usedCores = CeilDiv(cols, p.colsPerCore);
  p.tileCols = MinU32(AlignUp(p.colsPerCore, kCubeBlock), kMaxTileCols);
  p.tileRows = MinU32(rows, kMaxTileRows);
  for (;;) {
    const uint64_t in = RowBytes(p.tileCols, inBytes);
    const uint64_t acc = RowBytes(p.tileCols, kAccBytes);
    // double-buffered input rows, float32 copy of them (half input), accumulator, output row
    p.ubBytes = 2 * p.tileRows * in + (inBytes == kAccBytes ? 0 : p.tileRows * acc) + acc + in;
    if (p.ubBytes <= ubBudget) {
      *out = p;
      return Status::kOk;
    }
    if (p.tileRows > 1) {
      p.tileRows = std::max(1u, p.tileRows / 2);
    } else if (p.tileCols > kCubeBlock) {
      p.tileCols = AlignUp(p.tileCols / 2, kCubeBlock);
    } else {
      return Status::kOverBudget;
    }
  }
}

}  // namespace tiling
}  // namespace mindpet
