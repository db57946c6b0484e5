// rms_norm on CPU (contract: ops/CONTRACTS.md section 7), over the last dim D of [M, D]:
//   forward : s = x + r (or x); rstd = 1 / sqrt(sum s^2 / D + eps); y = s rstd gamma; h = s (with r only)
//   backward: xhat = s rstd; g = dy gamma; dx = rstd (g - xhat sum(g xhat) / D) (+ dh with r); dgamma = sum_M dy xhat
// Only rstd (float32, one per row) is saved; the backward reads s from the forward's sum output h (or x),
// which the caller keeps anyway (the residual stream), so nothing [M, D] is kept for the backward alone.
// Participants take row chunks (parallel.h); sums of squares are accumulated in float64; dgamma is a per-chunk
// partial sum reduced in chunk order.
#include <cmath>
#include <cstdint>
#include <vector>

#include "aot_args.h"
#include "export.h"
#include "float_views.h"
#include "mindpet/contracts.h"
#include "parallel.h"
#include "partials.h"

namespace mindpet {
namespace cpu {
namespace {

struct RmsDims {
  int64_t m, d;
};

constexpr int64_t kChunkRows = 64;

// h (may be null without residual) receives s = x + r; y = s rstd gamma.
void ForwardF32(const RmsDims& s, const float* x, const float* r, const float* gamma, float eps, float* y, float* h,
                float* rstd) {
  if (s.m == 0) return;
  const int threads = NormThreads(s.m, s.d);
  ParallelFor(s.m, threads, RowGrain(s.m, threads, kChunkRows), [&](Range rows, int64_t) {
    for (int64_t i = rows.begin; i < rows.end; ++i) {
      const float* x_row = x + i * s.d;
      const float* row = x_row;
      if (r != nullptr) {
        const float* r_row = r + i * s.d;
        float* h_row = h + i * s.d;
#pragma omp simd
        for (int64_t j = 0; j < s.d; ++j) h_row[j] = x_row[j] + r_row[j];
        row = h_row;
      }
      double sq = 0.0;
#pragma omp simd reduction(+ : sq)
      for (int64_t j = 0; j < s.d; ++j) sq += static_cast<double>(row[j]) * row[j];
      const float rs = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(s.d) + eps));
      rstd[i] = rs;
      float* y_row = y + i * s.d;
#pragma omp simd
      for (int64_t j = 0; j < s.d; ++j) y_row[j] = row[j] * rs * gamma[j];
    }
  });
}

// dh may be null (no residual).
void BackwardF32(const RmsDims& s, const float* dy, const float* dh, const float* sum, const float* gamma,
                 const float* rstd, float* dx, float* dgamma) {
  const int threads = NormThreads(s.m, s.d);
  const std::vector<Range> chunks = PlanChunks(s.m, threads, RowGrain(s.m, threads, kChunkRows));
  ThreadPartials partials(static_cast<int64_t>(chunks.size()), s.d);
  ParallelFor(chunks, threads, [&](Range rows, int64_t chunk) {
    float* p_gamma = partials.part(chunk);
    partials.Zero(chunk);
    const float inv_d = 1.0f / static_cast<float>(s.d);
    for (int64_t i = rows.begin; i < rows.end; ++i) {
      const float* dy_row = dy + i * s.d;
      const float* s_row = sum + i * s.d;
      const float rs = rstd[i];
      float sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_gx)
      for (int64_t j = 0; j < s.d; ++j) sum_gx += dy_row[j] * gamma[j] * s_row[j];
      const float b = sum_gx * rs * inv_d;  // sum(g xhat) / D
      float* dx_row = dx + i * s.d;
      if (dh != nullptr) {
        const float* dh_row = dh + i * s.d;
#pragma omp simd
        for (int64_t j = 0; j < s.d; ++j) {
          const float xh = s_row[j] * rs;
          dx_row[j] = rs * (dy_row[j] * gamma[j] - xh * b) + dh_row[j];
          p_gamma[j] += dy_row[j] * xh;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < s.d; ++j) {
          const float xh = s_row[j] * rs;
          dx_row[j] = rs * (dy_row[j] * gamma[j] - xh * b);
          p_gamma[j] += dy_row[j] * xh;
        }
      }
    }
  });
  partials.ReduceInto(0, s.d, 1.0f, dgamma);
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::DType;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace rn = mindpet::contracts::rms_norm;

namespace {
std::string RunRmsNormForward(const AotArgs& args) {
  const int o = rn::kFwdNumInputs;
  const mindpet::cpu::RmsDims s{args.dim(rn::kFwdX, 0), args.dim(rn::kFwdX, 1)};
  const bool has_residual = args.scalar(rn::kFwdHasResidual) != 0.0;
  if (args.ndim(rn::kFwdX) != 2 || args.numel(rn::kFwdGamma) != s.d ||
      (has_residual && (args.numel(rn::kFwdResidual) != s.m * s.d || args.numel(o + rn::kFwdH) != s.m * s.d)) ||
      args.numel(o + rn::kFwdY) != s.m * s.d || args.numel(o + rn::kFwdRstd) != s.m) {
    return "shapes do not follow x [M,D], residual [M,D] or [1], gamma [D], y [M,D], h [M,D] or [1], rstd [M]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {rn::kFwdX, rn::kFwdResidual, rn::kFwdGamma, o + rn::kFwdY,
                                           o + rn::kFwdH})) {
    return "x, residual, gamma, y and h must share dtype float32 or float16";
  }
  if (args.dtype(o + rn::kFwdRstd) != DType::kFloat32) return "rstd must be float32";
  const float eps = static_cast<float>(args.scalar(rn::kFwdEpsilon));
  if (!(eps >= 0.0f)) return "epsilon must be >= 0";
  const FloatIn x(args, rn::kFwdX), r(args, rn::kFwdResidual, has_residual), gamma(args, rn::kFwdGamma);
  FloatOut y(args, o + rn::kFwdY), h(args, o + rn::kFwdH);
  mindpet::cpu::ForwardF32(s, x.get(), r.get(), gamma.get(), eps, y.get(), has_residual ? h.get() : nullptr,
                           static_cast<float*>(args.data(o + rn::kFwdRstd)));
  if (!has_residual) h.get()[0] = 0.0f;  // the [1] stand-in: defined, never read
  mindpet::cpu::CommitAll({&y, &h});
  return {};
}

std::string RunRmsNormBackward(const AotArgs& args) {
  const int o = rn::kBwdNumInputs;
  const mindpet::cpu::RmsDims s{args.dim(rn::kBwdS, 0), args.dim(rn::kBwdS, 1)};
  const bool has_residual = args.scalar(rn::kBwdHasResidual) != 0.0;
  if (args.ndim(rn::kBwdS) != 2 || args.numel(rn::kBwdDy) != s.m * s.d || args.numel(rn::kBwdGamma) != s.d ||
      (has_residual && args.numel(rn::kBwdDh) != s.m * s.d) || args.numel(rn::kBwdRstd) != s.m ||
      args.numel(o + rn::kBwdDx) != s.m * s.d || args.numel(o + rn::kBwdDGamma) != s.d) {
    return "shapes do not follow dy [M,D], dh [M,D] or [1], s [M,D], gamma [D], rstd [M]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {rn::kBwdDy, rn::kBwdDh, rn::kBwdS, rn::kBwdGamma, o + rn::kBwdDx,
                                           o + rn::kBwdDGamma})) {
    return "dy, dh, s, gamma and the gradients must share dtype float32 or float16";
  }
  if (args.dtype(rn::kBwdRstd) != DType::kFloat32) return "rstd must be float32";
  const FloatIn dy(args, rn::kBwdDy), dh(args, rn::kBwdDh, has_residual), sum(args, rn::kBwdS),
      gamma(args, rn::kBwdGamma);
  FloatOut dx(args, o + rn::kBwdDx), dgamma(args, o + rn::kBwdDGamma);
  mindpet::cpu::BackwardF32(s, dy.get(), dh.get(), sum.get(), gamma.get(),
                            static_cast<const float*>(args.data(rn::kBwdRstd)), dx.get(), dgamma.get());
  mindpet::cpu::CommitAll({&dx, &dgamma});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(RmsNormForward, rn::kFwdNumInputs + rn::kFwdNumOutputs, RunRmsNormForward)
MINDPET_AOT_ENTRY(RmsNormBackward, rn::kBwdNumInputs + rn::kBwdNumOutputs, RunRmsNormBackward)
