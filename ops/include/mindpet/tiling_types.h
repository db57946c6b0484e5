// Plain tiling records shared by the host planner (ops/tiling/*.cc), the Ascend C op_host and the
// Ascend C kernels. POD only, fixed-width integers, no STL and no CANN types, so the same header
// compiles for the host, for pybind11 and for the AI core. The small index helpers below are the
// only arithmetic the kernels do on a plan; they are unit-tested through mindpet._native.
#pragma once
#include <stdint.h>

#if defined(__CCE_KT_TEST__) || defined(__CCE_AICORE__) || defined(ASCENDC_CPU_DEBUG)
#define MINDPET_TILING_FN __aicore__ inline
#else
#define MINDPET_TILING_FN inline
#endif

namespace mindpet {
namespace tiling {

// On-chip budgets of one AI core, in bytes. Defaults are an Atlas A2 (910B) core: 24 AIC and
// 48 AIV (MIX mode pairs 1 AIC with 2 AIV), UB 192 KiB per AIV, L1 512 KiB, L0A/L0B 64 KiB,
// L0C 128 KiB; alignment UB/L1 32 B, L0A/L0B 512 B, L0C 64 B (CANN "Hardware Constraints" page
// of the Ascend C guide; platform numbers as returned by PlatformAscendC::GetCoreMemSize).
// On a real device op_host overwrites every field from the platform query.
struct HardwareSpec {
  uint32_t cores;          // logical cores that split work: AIV count in MIX mode
  uint32_t aivPerAic;      // AIVs sharing one AIC (its L1/L0 budgets are divided among them)
  uint64_t ubBytes;        // Unified Buffer of one AIV
  uint64_t ubReserveBytes; // UB left to the Matmul API and scalars
  uint64_t l1Bytes;
  uint64_t l0aBytes;
  uint64_t l0bBytes;
  uint64_t l0cBytes;
};

constexpr uint32_t kUbAlign = 32;     // UB and L1 start addresses / DataCopy granule
constexpr uint32_t kL0abAlign = 512;  // one 16 x C0 fractal
constexpr uint32_t kL0cAlign = 64;
constexpr uint32_t kCubeBlock = 16;   // M and N granule of the cube unit
constexpr uint32_t kKGranule = 16;    // baseK granule, float16 and float32 (TCubeTiling alignment)
constexpr uint32_t kAccBytes = 4;     // L0C accumulates in float32
constexpr uint32_t kMaxGemms = 4;     // matmul objects of one fused stage
constexpr uint32_t kMaxUbBuffers = 12;
constexpr uint32_t kMaxWsRegions = 4;  // GM workspace regions of one kind (whole-M or per-core)
// Every GM workspace region starts on a 512-byte boundary (UB/DataCopy granule is 32 bytes; 512
// bytes is the alignment the Ascend C guide recommends for GM addresses of DataCopy).
constexpr uint32_t kWsAlign = 512;

// Base tiles of one matmul object planned for a single-core shape (m, n, k). Byte counts include
// the double buffering of L1/L0A/L0B; L0C is single-buffered.
struct GemmBase {
  uint32_t m, n, k;                // single-core shape (rows, cols, reduction)
  uint32_t baseM, baseN, baseK;
  uint32_t depthA1, depthB1;       // base tiles of A / B kept in L1 per buffer
  uint32_t inBytes, outBytes;
  uint64_t l1Bytes, l0aBytes, l0bBytes, l0cBytes;
};

// A 2-D grid of output blocks, one block per core, row-major over (mBlock, nBlock).
struct BlockGrid {
  uint32_t m, n;
  uint32_t blockM, blockN;
  uint32_t mBlocks, nBlocks;
  uint32_t usedCores;  // mBlocks * nBlocks; cores at or past it have no block
};

struct Range2D {
  uint32_t m0, mLen, n0, nLen;
};

// A plain GEMM C[m, n] = A[m, k] B[k, n] split over cores (used for the weight gradients, whose
// reduction axis is the token axis).
struct GemmPlan {
  BlockGrid grid;
  GemmBase base;  // planned for (blockM, blockN, k)
};

// One UB buffer of a fused stage: bytes = (rowBytes * chunkM + fixedBytes) per copy, count copies.
struct UbBuffer {
  uint32_t rowBytes;
  uint32_t fixedBytes;
  uint32_t count;
};

// A fused row stage: the output [m, n] is split into blocks (grid); each core walks its block in
// row chunks of chunkM rows, running gemm[0..numGemms) per chunk. Epilogue tiles are the base
// tiles (baseM x baseN) of gemm[epilogueGemm] over chunk x block columns.
struct FusedPlan {
  BlockGrid grid;
  uint32_t chunkM;
  uint32_t numGemms;
  uint32_t epilogueGemm;            // the gemm whose base tiles write the stage output
  uint32_t nIsBlock[kMaxGemms];     // 1: gemm n = block columns; 0: gemm n = its fixed width
  GemmBase gemm[kMaxGemms];
  uint32_t numUb;
  UbBuffer ub[kMaxUbBuffers];
  uint32_t elemTile;        // elements per tile of flat element-wise passes (0: none)
  uint64_t ubBytes;         // total UB of the stage at chunkM
  uint64_t workspaceBytes;  // user GM workspace of the stage (all cores)
};

// Column sums of a [rows, cols] matrix (bias gradients): each core owns a column range; it walks
// it in tiles of tileCols columns x tileRows rows.
struct ColumnSumPlan {
  uint32_t rows, cols;
  uint32_t colsPerCore;  // multiple of the 32-byte granule except the last core's range
  uint32_t usedCores;
  uint32_t tileRows, tileCols;
  uint32_t inBytes;
  uint64_t ubBytes;
};

// ---- index helpers (host and AI core) -------------------------------------------------------

MINDPET_TILING_FN uint32_t CeilDiv(uint32_t a, uint32_t b) { return b == 0 ? 0 : (a + b - 1) / b; }
MINDPET_TILING_FN uint32_t AlignUp(uint32_t a, uint32_t b) { return CeilDiv(a, b) * b; }
MINDPET_TILING_FN uint32_t MinU32(uint32_t a, uint32_t b) { return a < b ? a : b; }

// Bytes of a GM workspace region of `rows` rows of `rowBytes` bytes, rounded up to kWsAlign so the
// next region starts aligned. The planner (workspaceBytes) and the kernels (region offsets) both
// lay the workspace out with it.
MINDPET_TILING_FN uint64_t WsRegion(uint64_t rows, uint64_t rowBytes) {
  return (rows * rowBytes + kWsAlign - 1) / kWsAlign * kWsAlign;
}

// The block of `core`; empty (mLen == nLen == 0) when the core has no work.
MINDPET_TILING_FN Range2D GridBlock(const BlockGrid& g, uint32_t core) {
  Range2D r = {0, 0, 0, 0};
  if (core >= g.usedCores || g.nBlocks == 0) return r;
  const uint32_t mi = core / g.nBlocks;
  const uint32_t ni = core % g.nBlocks;
  r.m0 = mi * g.blockM;
  r.n0 = ni * g.blockN;
  r.mLen = MinU32(g.blockM, g.m - r.m0);
  r.nLen = MinU32(g.blockN, g.n - r.n0);
  return r;
}

// True for the one core of each block row that writes the row-wise saved tensors (u, g, z ...).
MINDPET_TILING_FN bool WritesRowOutputs(const BlockGrid& g, uint32_t core) {
  return core < g.usedCores && core % g.nBlocks == 0;
}

MINDPET_TILING_FN uint32_t ChunkCount(const FusedPlan& p, const Range2D& block) {
  return CeilDiv(block.mLen, p.chunkM);
}

// Rows [m0, m0 + mLen) of chunk `c` of a block; columns stay those of the block.
MINDPET_TILING_FN Range2D ChunkOf(const FusedPlan& p, const Range2D& block, uint32_t c) {
  Range2D r = block;
  r.m0 = block.m0 + c * p.chunkM;
  r.mLen = MinU32(p.chunkM, block.m0 + block.mLen - r.m0);
  return r;
}

// Output area of gemm `g` for a chunk: the chunk's block columns, or [0, n) for a fixed-width gemm.
MINDPET_TILING_FN Range2D GemmArea(const FusedPlan& p, uint32_t g, const Range2D& chunk) {
  Range2D r = chunk;
  if (!p.nIsBlock[g]) {
    r.n0 = 0;
    r.nLen = p.gemm[g].n;
  }
  return r;
}

MINDPET_TILING_FN uint32_t TileCount(const GemmBase& b, const Range2D& area) {
  return CeilDiv(area.mLen, b.baseM) * CeilDiv(area.nLen, b.baseN);
}

// Base tile `t` of an area, row-major over (m tiles, n tiles); tails are the short last tiles.
MINDPET_TILING_FN Range2D TileOf(const GemmBase& b, const Range2D& area, uint32_t t) {
  const uint32_t nTiles = CeilDiv(area.nLen, b.baseN);
  Range2D r;
  r.m0 = area.m0 + (t / nTiles) * b.baseM;
  r.n0 = area.n0 + (t % nTiles) * b.baseN;
  r.mLen = MinU32(b.baseM, area.m0 + area.mLen - r.m0);
  r.nLen = MinU32(b.baseN, area.n0 + area.nLen - r.n0);
  return r;
}

// Column range [n0, n0 + nLen) of `core` in a column-sum plan (m0 = 0, mLen = rows).
MINDPET_TILING_FN Range2D ColumnRange(const ColumnSumPlan& p, uint32_t core) {
  Range2D r = {0, 0, 0, 0};
  if (core >= p.usedCores) return r;
  r.mLen = p.rows;
  r.n0 = core * p.colsPerCore;
  r.nLen = MinU32(p.colsPerCore, p.cols - r.n0);
  return r;
}

}  // namespace tiling
}  // namespace mindpet
