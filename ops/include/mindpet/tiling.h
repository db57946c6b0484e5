// Host-side tiling planner of the fused Ascend kernels: pure C++ (no CANN types), compiled into
// mindpet_tiling on every machine, called by ascendc/op_host and unit-tested through
// mindpet._native. Every function is deterministic and returns a Status instead of throwing.
#pragma once
#include <string>

#include "mindpet/tiling_ops.h"
#include "mindpet/tiling_types.h"

namespace mindpet {
namespace tiling {

enum class Status : int {
  kOk = 0,
  kBadShape = 1,      // a zero or unsupported dimension / dtype size
  kNoCores = 2,       // hw.cores == 0
  kOverBudget = 3,    // even the smallest tiles do not fit the on-chip buffers
};

const char* StatusMessage(Status s);

// Atlas A2 (910B) defaults; see HardwareSpec in tiling_types.h for the sources.
HardwareSpec DefaultHardware();

// Per-object on-chip budgets (bytes) a matmul may use.
struct GemmBudget {
  uint64_t l1, l0a, l0b, l0c;
};

// The budget of one matmul object when `objects` of them share the AIC of `hw`.
GemmBudget SharedBudget(const HardwareSpec& hw, uint32_t objects);

// Base tiles for a single-core C[m, n] = A[m, k] B[k, n].
Status PlanGemmBase(uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes, uint32_t outBytes,
                    bool bias, const GemmBudget& budget, GemmBase* out);

// Cost weights of one output block, used to pick the grid (see PlanGrid).
struct GridCost {
  double perElement;  // work per output element (e.g. MACs: k + rank)
  double perRow;      // work repeated per block row by every block of that row (e.g. k * rank)
  double perColumn;   // work repeated per block column (e.g. weight bytes read)
};

// Split [m, n] into at most `cores` blocks (m granule 16 rows, n granule 16 columns) minimising
// the cost of the largest block; ties go to fewer column blocks, then fewer cores.
BlockGrid PlanGrid(uint32_t m, uint32_t n, uint32_t cores, const GridCost& cost);

// A whole GEMM over the cores (grid + base tiles of the largest block).
Status PlanGemm(uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes, uint32_t outBytes,
                const HardwareSpec& hw, GemmPlan* out);
// The same, for a kernel holding `objects` matmul objects that share the on-chip buffers.
Status PlanGemmShared(uint32_t m, uint32_t n, uint32_t k, uint32_t inBytes, uint32_t outBytes,
                      const HardwareSpec& hw, uint32_t objects, GemmPlan* out);

// One matmul object for several GEMM plans with the same reduction length k (a kernel may define at
// most 4 Matmul objects: REGIST_MATMUL_OBJ). Each plan keeps its grid; every plan's `base` becomes
// the same base tiles planned for the envelope (m = the largest block rows, n = the largest block
// columns of all the grids, k), so the TCubeTiling op_host derives from any of them is valid for
// every block of every plan (a block is never larger than the envelope's single-core shape).
Status ShareGemmObject(GemmPlan* const* plans, uint32_t count, const HardwareSpec& hw, uint32_t objects);

// Description of a fused row stage, turned into a FusedPlan by PlanFused.
struct FusedGemmSpec {
  bool nIsBlock;   // true: n = block columns; false: n = `n`
  uint32_t n, k;
  uint32_t inBytes, outBytes;
  bool bias;
};

enum class UbKind : int {
  kTile = 0,       // baseM x baseN of gemm `gemm`, elemBytes per element
  kChunkRows = 1,  // chunkM x `cols`, elemBytes per element (rows 32-byte padded)
  kElemTile = 2,   // elemTile elements of elemBytes (flat element-wise passes)
  kFixed = 3,      // `cols` elements of elemBytes
};

struct UbSpec {
  UbKind kind;
  uint32_t gemm;
  uint32_t cols;
  uint32_t elemBytes;
  uint32_t count;  // 2 = double-buffered
};

struct FusedSpec {
  uint32_t m, n;  // stage output
  uint32_t numGemms;
  uint32_t epilogueGemm;
  FusedGemmSpec gemm[kMaxGemms];
  uint32_t numUb;
  UbSpec ub[kMaxUbBuffers];
  GridCost cost;
  uint32_t kernelObjects;         // matmul objects of the whole kernel (>= numGemms)
  // GM workspace, in kernel order: whole-stage regions of m rows, then per used core its private
  // regions of chunkM rows; row widths in bytes. Each region is WsRegion-aligned (512 bytes).
  uint32_t numGlobalRegions;
  uint64_t globalRowBytes[kMaxWsRegions];
  uint32_t numCoreRegions;
  uint64_t coreRowBytes[kMaxWsRegions];
};

Status PlanFused(const FusedSpec& spec, const HardwareSpec& hw, FusedPlan* out);

Status PlanColumnSum(uint32_t rows, uint32_t cols, uint32_t inBytes, const HardwareSpec& hw,
                     ColumnSumPlan* out);

// ---- the three ops ---------------------------------------------------------------------------
Status PlanLoraLinearForward(const LoraLinearShape& s, const HardwareSpec& hw,
                             LoraLinearForwardTiling* out);
Status PlanLoraLinearBackward(const LoraLinearShape& s, const HardwareSpec& hw,
                              LoraLinearBackwardTiling* out);
Status PlanAdapterForward(const AdapterShape& s, const HardwareSpec& hw, AdapterForwardTiling* out);
Status PlanAdapterBackward(const AdapterShape& s, const HardwareSpec& hw,
                           AdapterBackwardTiling* out);
Status PlanLowRankAdapterForward(const LowRankAdapterShape& s, const HardwareSpec& hw,
                                 LowRankAdapterForwardTiling* out);
Status PlanLowRankAdapterBackward(const LowRankAdapterShape& s, const HardwareSpec& hw,
                                  LowRankAdapterBackwardTiling* out);

}  // namespace tiling
}  // namespace mindpet
