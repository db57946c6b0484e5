// Tiling records of the three fused ops (forward and backward), as op_host hands them to the
// Ascend C kernels. POD only (see tiling_types.h). Stage roles follow ops/CONTRACTS.md.
#pragma once
#include "mindpet/tiling_types.h"

namespace mindpet {
namespace tiling {

// lora_linear: x [m, k], W [n, k], A [rank, k], B [n, rank]; y [m, n].
struct LoraLinearShape {
  uint32_t m, k, n, rank;
  uint32_t dtypeBytes;  // 2 (float16) or 4 (float32)
  uint32_t hasBias;
  uint32_t dropout;     // 1: x_d = x * mask is formed on chip (the mask holds 0 or 1/(1-p))
};

struct LoraLinearForwardTiling {
  // gemm[0] y = x W^T + b; gemm[1] u = x_d A^T; gemm[2] y += (s u) B^T (all C to GM).
  FusedPlan y;
};

struct LoraLinearBackwardTiling {
  // Stage 1 over dx [m, k]: gemm[0] dy W; gemm[1] g = dy B; gemm[2] (s g) A (masked when dropout).
  FusedPlan dx;
  // Stage 2 (after a vector-core barrier): dA = (s g)^T x_d [rank, k]; dB = dy^T (s u) [n, rank].
  // Both run on one Matmul object: their bases are identical, planned for the envelope of both
  // grids (ShareGemmObject); the stage-1 and stage-2 budgets are those of 4 objects.
  GemmPlan dA;
  GemmPlan dB;
};

// adapter: h [m, d], down W_d [bottleneck, d], up W_u [d, bottleneck]; y [m, d].
struct AdapterShape {
  uint32_t m, d, bottleneck;
  uint32_t dtypeBytes;
};

struct AdapterForwardTiling {
  // gemm[0] z = h W_d^T + b_d (to GM, act -> a); gemm[1] y = h + a W_u^T + b_u (to GM, + h).
  FusedPlan y;
};

struct AdapterBackwardTiling {
  // Stage 1 over dh [m, d]: gemm[0] t = dy W_u, dz = t * act'(z); gemm[1] dh = dy + dz W_d.
  FusedPlan dh;
  GemmPlan dWu;         // dy^T a   [d, bottleneck]
  GemmPlan dWd;         // dz^T h   [bottleneck, d]
  ColumnSumPlan dbUp;   // sum_rows dy  [d]
  ColumnSumPlan dbDown; // sum_rows dz  [bottleneck]
};

// low_rank_adapter: Ldl [d, rank], Ldr [rank, bottleneck], Lul [bottleneck, rank],
// Lur [rank, d]; y = h + act(h Ldl Ldr + bd) Lul Lur + bu.
struct LowRankAdapterShape {
  uint32_t m, d, bottleneck, rank;
  uint32_t dtypeBytes;
};

struct LowRankAdapterForwardTiling {
  // gemm[0] t = h Ldl; gemm[1] z = t Ldr + bd, a = act(z); gemm[2] q = a Lul;
  // gemm[3] y = h + q Lur + bu.
  FusedPlan y;
};

struct LowRankAdapterBackwardTiling {
  // Stage 1 over dh: gemm[0] dq = dy Lur^T; gemm[1] dz = (dq Lul^T) * act'(z);
  // gemm[2] dt = dz Ldr^T; gemm[3] dh = dy + dt Ldl^T.
  FusedPlan dh;
  GemmPlan dDownLeft;   // h^T dt   [d, rank]
  GemmPlan dDownRight;  // t^T dz   [rank, bottleneck]
  GemmPlan dUpLeft;     // a^T dq   [bottleneck, rank]
  GemmPlan dUpRight;    // q^T dy   [rank, d]
  ColumnSumPlan dbUp;   // sum_rows dy
  ColumnSumPlan dbDown; // sum_rows dz
};

}  // namespace tiling
}  // namespace mindpet
