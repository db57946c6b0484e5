// Tiling data handed from op_host to the kernels (standard C++ struct tiling): the pure-C++ plan of
// mindpet/tiling_ops.h (unit-tested on every machine) plus one TCubeTiling per matmul object,
// which op_host derives from the plan with CANN's matmul tiling API.
#ifndef MINDPET_ASCENDC_TILING_DATA_H
#define MINDPET_ASCENDC_TILING_DATA_H
#include <cstdint>

#include "kernel_tiling/kernel_tiling.h"
#include "mindpet/tiling_ops.h"

struct MindpetLoraLinearTilingData {
  mindpet::tiling::LoraLinearForwardTiling plan;
  AscendC::tiling::TCubeTiling mm[3];  // y = x W^T (+b); u = x_d A^T; y += (s u) B^T
  float scale;
  uint32_t hasBias;
  uint32_t hasMask;
};

struct MindpetLoraLinearGradTilingData {
  mindpet::tiling::LoraLinearBackwardTiling plan;
  // dy W; g = dy B; (s g) A; the weight-gradient object serving dA = (s g)^T x_d and
  // dB = dy^T (s u) (plan.dA.base == plan.dB.base, mindpet::tiling::ShareGemmObject).
  AscendC::tiling::TCubeTiling mm[4];
  float scale;
  uint32_t hasMask;
};

struct MindpetAdapterTilingData {
  mindpet::tiling::AdapterForwardTiling plan;
  AscendC::tiling::TCubeTiling mm[2];  // z = h Wd^T + bd; a Wu^T + bu
  int32_t activation;
};

struct MindpetAdapterGradTilingData {
  mindpet::tiling::AdapterBackwardTiling plan;
  AscendC::tiling::TCubeTiling mm[4];  // t = dy Wu; dz Wd; dWu = dy^T a; dWd = dz^T h
  int32_t activation;
};

struct MindpetLowRankAdapterTilingData {
  mindpet::tiling::LowRankAdapterForwardTiling plan;
  AscendC::tiling::TCubeTiling mm[4];  // t = h Ldl; z = t Ldr + bd; q = a Lul; q Lur + bu
  int32_t activation;
};

struct MindpetLowRankAdapterGradTilingData {
  mindpet::tiling::LowRankAdapterBackwardTiling plan;
  // dq = dy Lur^T; dq Lul^T; dt = dz Ldr^T; dt Ldl^T;
  // dLdl = h^T dt; dLdr = t^T dz; dLul = a^T dq; dLur = q^T dy
  // The kernel defines 4 Matmul objects (the API maximum): it registers mm[0] or mm[2] (larger k),
  // mm[1] or mm[3] (larger n), mm[4] (same base and shape as mm[6]) and mm[5] (as mm[7]).
  AscendC::tiling::TCubeTiling mm[8];
  int32_t activation;
};

#endif  // MINDPET_ASCENDC_TILING_DATA_H
