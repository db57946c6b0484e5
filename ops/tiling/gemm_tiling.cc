// Base tiles and core grids of single GEMMs (see mindpet/tiling.h).
#include <algorithm>
#include <vector>

#include "mindpet/tiling.h"

namespace mindpet {
namespace tiling {
namespace {

constexpr uint32_t kMaxBaseM = 128;
constexpr uint32_t kMaxBaseKBytes = 256;  // baseK * inBytes per row of an L0A/L0B tile

bool ValidBytes(uint32_t b) { return b == 2 || b == 4; }

uint64_t FloorTo(uint64_t v, uint64_t g) { return v / g * g; }

// 16-aligned sizes from `start` halving down to 16.
std::vector<uint32_t> Halvings(uint32_t start) {
  std::vector<uint32_t> out;
  for (uint32_t v = start; v >= kCubeBlock;) {
    out.push_back(v);
    const uint32_t next = AlignUp(v / 2, kCubeBlock);
    if (next >= v) break;
    v = next;
  }
  return out;
}

}  // namespace

const char* StatusMessage(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kBadShape: return "unsupported shape or dtype size";
    case Status::kNoCores: return "no cores to split the work over";
    case Status::kOverBudget: return "tiles do not fit the on-chip buffers";
  }
  return "unknown status";
}

HardwareSpec DefaultHardware() {
  HardwareSpec hw;
  hw.cores = 48;
  hw.aivPerAic = 2;
  hw.ubBytes = 192 * 1024;
  hw.ubReserveBytes = 16 * 1024;
  hw.l1Bytes = 512 * 1024;
  hw.l0aBytes = 64 * 1024;
  hw.l0bBytes = 64 * 1024;
  hw.l0cBytes = 128 * 1024;
  return hw;
}

// Conservative split of the AIC's buffers. The cube-side server keeps one instance of each Matmul
// object per AIV (MatmulInst::cubeObj[MIX_NUM], 2 on A2), but with the tiling's shareMode 0 every
// instance's L1 and L0C allocation restarts at the same shared start (TPipe AuxShareBufStart), so
// instances take turns (End() between objects) rather than add up; L0A/L0B are whole-buffer
// ping-pong pools shared by all. The budgets still divide L1 among every object of every AIV and
// L0A/L0B/L0C among the objects of the kernel, so they hold even if instances were resident at once
// (L0C: see tests/native/tiling_checks.py check_l0c).
GemmBudget SharedBudget(const HardwareSpec& hw, uint32_t objects) {
  const uint64_t n = std::max<uint32_t>(objects, 1);
  const uint64_t aiv = std::max<uint32_t>(hw.aivPerAic, 1);
  GemmBudget b;
  b.l1 = FloorTo(hw.l1Bytes / (aiv * n), kUbAlign);
  b.l0a = FloorTo(hw.l0aBytes / n, kL0abAlign);
  b.l0b = FloorTo(hw.l0bBytes / n, kL0abAlign);
  b.l0c = FloorTo(hw.l0cBytes / n, kL0cAlign);
  return b;
}

Status PlanGemmBase(uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes, uint32_t outBytes,
                    bool bias, const GemmBudget& budget, GemmBase* out) {
  if (m == 0 || n == 0 || k == 0 || !ValidBytes(inBytes) || !ValidBytes(outBytes)) {
    return Status::kBadShape;
  }
  // baseK granule: 16 elements for both dtypes. TCubeTiling (constraints table): baseK is aligned to
  // C0 (32 bytes: 16 half / 8 float) only when A is not transposed and B is transposed, to 16
  // elements otherwise; the matmul tiling source also wants an even float32 k. The kernels use
  // both layouts, so float32 takes the 16-element granule too (16 half = 32 bytes, 16 float = 64).
  const uint32_t kGranule = kKGranule;
  const uint32_t mA = AlignUp(m, kCubeBlock), nA = AlignUp(n, kCubeBlock), kA = AlignUp(k, kGranule);
  const uint32_t maxN = inBytes == 2 ? 256 : 128;
  // Candidate (baseM, baseN) pairs, largest area first, then taller first.
  std::vector<std::pair<uint32_t, uint32_t>> pairs;
  for (uint32_t bm : Halvings(MinU32(kMaxBaseM, mA))) {
    for (uint32_t bn : Halvings(MinU32(maxN, nA))) pairs.emplace_back(bm, bn);
  }
  std::stable_sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
    const uint64_t aa = uint64_t(a.first) * a.second, bb = uint64_t(b.first) * b.second;
    return aa != bb ? aa > bb : a.first > b.first;
  });
  const uint64_t biasBytes = bias ? AlignUp(nA * kAccBytes, kUbAlign) : 0;
  for (const auto& [bm, bn] : pairs) {
    const uint64_t l0c = uint64_t(bm) * bn * kAccBytes;
    if (l0c > budget.l0c) continue;
    const uint64_t kFitA = budget.l0a / (2ull * bm * inBytes);
    const uint64_t kFitB = budget.l0b / (2ull * bn * inBytes);
    uint64_t baseK = std::min<uint64_t>({kA, kMaxBaseKBytes / inBytes, kFitA, kFitB});
    baseK = FloorTo(baseK, kGranule);
    for (; baseK >= kGranule; baseK = FloorTo(baseK / 2, kGranule)) {
      const uint32_t kTiles = CeilDiv(kA, uint32_t(baseK));
      for (uint32_t depth : {4u, 2u, 1u}) {
        const uint32_t d = MinU32(depth, kTiles);
        const uint64_t l1 = 2ull * (uint64_t(d) * bm * baseK + uint64_t(d) * baseK * bn) * inBytes +
                            biasBytes;
        if (l1 > budget.l1) continue;
        GemmBase g;
        g.m = m; g.n = n; g.k = k;
        g.baseM = bm; g.baseN = bn; g.baseK = uint32_t(baseK);
        g.depthA1 = d; g.depthB1 = d;
        g.inBytes = inBytes; g.outBytes = outBytes;
        g.l1Bytes = l1;
        g.l0aBytes = 2ull * bm * baseK * inBytes;
        g.l0bBytes = 2ull * baseK * bn * inBytes;
        g.l0cBytes = l0c;
        *out = g;
        return Status::kOk;
      }
      if (baseK == kGranule) break;
    }
  }
  return Status::kOverBudget;
}

BlockGrid PlanGrid(uint32_t m, uint32_t n, uint32_t cores, const GridCost& cost) {
  BlockGrid best = {m, n, 0, 0, 0, 0, 0};
  double bestCost = 0.0;
  for (uint32_t mb = 1; mb <= cores; ++mb) {
    const uint32_t blockM = MinU32(AlignUp(CeilDiv(m, mb), kCubeBlock), m);
    const uint32_t mBlocks = CeilDiv(m, blockM);
    if (mBlocks != mb && mb > 1) continue;  // the same split was seen with a smaller mb
    for (uint32_t nb = 1; nb * mBlocks <= cores; ++nb) {
      const uint32_t blockN = MinU32(AlignUp(CeilDiv(n, nb), kCubeBlock), n);
      const uint32_t nBlocks = CeilDiv(n, blockN);
      if (nBlocks != nb && nb > 1) continue;
      const double c = double(blockM) * blockN * cost.perElement + double(blockM) * cost.perRow +
                       double(blockN) * cost.perColumn;
      const uint32_t used = mBlocks * nBlocks;
      const bool better = best.usedCores == 0 || c < bestCost ||
                          (c == bestCost && (nBlocks < best.nBlocks ||
                                             (nBlocks == best.nBlocks && used < best.usedCores)));
      if (better) {
        best = {m, n, blockM, blockN, mBlocks, nBlocks, used};
        bestCost = c;
      }
    }
  }
  return best;
}

Status PlanGemmShared(uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes, uint32_t outBytes,
                      const HardwareSpec& hw, uint32_t objects, GemmPlan* out) {
  if (hw.cores == 0) return Status::kNoCores;
  if (m == 0 || n == 0 || k == 0) return Status::kBadShape;
  const double bytesPerK = double(k) * inBytes;
  const GridCost cost = {double(k), bytesPerK, bytesPerK};
  GemmPlan p;
  p.grid = PlanGrid(m, n, hw.cores, cost);
  const Status s = PlanGemmBase(p.grid.blockM, p.grid.blockN, k, inBytes, outBytes, false,
                                SharedBudget(hw, objects), &p.base);
  if (s == Status::kOk) *out = p;
  return s;
}

Status ShareGemmObject(GemmPlan* const* plans, uint32_t count, const HardwareSpec& hw, uint32_t objects) {
  if (count == 0 || plans == nullptr) return Status::kBadShape;
  uint32_t m = 0, n = 0;
  const GemmBase& first = plans[0]->base;
  for (uint32_t i = 0; i < count; ++i) {
    const GemmPlan& p = *plans[i];
    if (p.base.k != first.k || p.base.inBytes != first.inBytes || p.base.outBytes != first.outBytes) {
      return Status::kBadShape;
    }
    m = std::max(m, p.grid.blockM);
    n = std::max(n, p.grid.blockN);
  }
  GemmBase shared;
  const Status s = PlanGemmBase(m, n, first.k, first.inBytes, first.outBytes, false,
                                SharedBudget(hw, objects), &shared);
  if (s != Status::kOk) return s;
  for (uint32_t i = 0; i < count; ++i) plans[i]->base = shared;
  return Status::kOk;
}

Status PlanGemm(uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes, uint32_t outBytes,
                const HardwareSpec& hw, GemmPlan* out) {
  return PlanGemmShared(m, n, k, inBytes, outBytes, hw, 1, out);
}

}  // namespace tiling
}  // namespace mindpet
