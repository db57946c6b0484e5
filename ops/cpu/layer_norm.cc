// layer_norm on CPU (contract: ops/CONTRACTS.md section 5), over the last dim D of [M, D]:
//   forward : s = x + r (or x); mean = sum s / D; var = sum (s - mean)^2 / D; rstd = 1 / sqrt(var + eps);
//             y = (s - mean) rstd gamma + beta
//   backward: xhat = (s - mean) rstd; g = dy gamma;
//             dx = rstd (g - sum g / D - xhat sum(g xhat) / D); dgamma = sum_M dy xhat; dbeta = sum_M dy
// Participants take row chunks (parallel.h); a row is read once into cache and used for every step. The row
// statistics are accumulated in float64 (a constant row gets mean == its value exactly, so xhat = 0
// even when eps is tiny). dgamma/dbeta are per-thread partial sums reduced at the end.
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

struct NormDims {
  int64_t m, d;
};

// Rows per chunk (at least): a chunk is then ~0.1-1 ms of work for transformer widths.
constexpr int64_t kChunkRows = 64;

// s = x_row (+ r_row) into buf; returns buf or x_row itself when there is no residual.
inline const float* RowSum(const float* x_row, const float* r_row, int64_t d, float* buf) {
  if (r_row == nullptr) return x_row;
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) buf[j] = x_row[j] + r_row[j];
  return buf;
}

void ForwardF32(const NormDims& s, const float* x, const float* r, const float* gamma, const float* beta, float eps,
                float* y, float* mean, float* rstd) {
  if (s.m == 0) return;
  const int threads = NormThreads(s.m, s.d);
  ParallelFor(s.m, threads, RowGrain(s.m, threads, kChunkRows), [&](Range rows, int64_t) {
    std::vector<float> buf(static_cast<size_t>(r != nullptr ? s.d : 0));
    for (int64_t i = rows.begin; i < rows.end; ++i) {
      const float* row = RowSum(x + i * s.d, r != nullptr ? r + i * s.d : nullptr, s.d, buf.data());
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < s.d; ++j) sum += row[j];
      const double mu = sum / static_cast<double>(s.d);
      double sq = 0.0;
#pragma omp simd reduction(+ : sq)
      for (int64_t j = 0; j < s.d; ++j) {
        const double c = row[j] - mu;
        sq += c * c;
      }
      const float mu_f = static_cast<float>(mu);
      const float rs = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(s.d) + eps));
      mean[i] = mu_f;
      rstd[i] = rs;
      float* y_row = y + i * s.d;
#pragma omp simd
      for (int64_t j = 0; j < s.d; ++j) y_row[j] = (row[j] - mu_f) * rs * gamma[j] + beta[j];
    }
  });
}

void BackwardF32(const NormDims& s, const float* dy, const float* x, const float* r, const float* gamma,
                 const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  const int threads = NormThreads(s.m, s.d);
  const std::vector<Range> chunks = PlanChunks(s.m, threads, RowGrain(s.m, threads, kChunkRows));
  ThreadPartials partials(static_cast<int64_t>(chunks.size()), 2 * s.d);  // per chunk: [dgamma | dbeta]
  ParallelFor(chunks, threads, [&](Range rows, int64_t chunk) {
    float* p_gamma = partials.part(chunk);
    float* p_beta = p_gamma + s.d;
    partials.Zero(chunk);
    std::vector<float> buf(static_cast<size_t>(2 * s.d));
    float* xhat = buf.data();
    float* g = xhat + s.d;
    const float inv_d = 1.0f / static_cast<float>(s.d);
    for (int64_t i = rows.begin; i < rows.end; ++i) {
      const float* dy_row = dy + i * s.d;
      const float mu = mean[i];
      const float rs = rstd[i];
      float sum_g = 0.0f;
      float sum_gx = 0.0f;
      if (r != nullptr) {
        const float* x_row = x + i * s.d;
        const float* r_row = r + i * s.d;
#pragma omp simd reduction(+ : sum_g, sum_gx)
        for (int64_t j = 0; j < s.d; ++j) {
          const float xh = (x_row[j] + r_row[j] - mu) * rs;
          const float gj = dy_row[j] * gamma[j];
          xhat[j] = xh;
          g[j] = gj;
          sum_g += gj;
          sum_gx += gj * xh;
        }
      } else {
        const float* x_row = x + i * s.d;
#pragma omp simd reduction(+ : sum_g, sum_gx)
        for (int64_t j = 0; j < s.d; ++j) {
          const float xh = (x_row[j] - mu) * rs;
          const float gj = dy_row[j] * gamma[j];
          xhat[j] = xh;
          g[j] = gj;
          sum_g += gj;
          sum_gx += gj * xh;
        }
      }
      const float a = sum_g * inv_d;
      const float b = sum_gx * inv_d;
      float* dx_row = dx + i * s.d;
#pragma omp simd
      for (int64_t j = 0; j < s.d; ++j) {
        dx_row[j] = rs * (g[j] - a - xhat[j] * b);
        p_gamma[j] += dy_row[j] * xhat[j];
        p_beta[j] += dy_row[j];
      }
    }
  });
  partials.ReduceInto(0, s.d, 1.0f, dgamma);
  partials.ReduceInto(s.d, s.d, 1.0f, dbeta);
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::DType;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace ln = mindpet::contracts::layer_norm;

namespace {
std::string RunLayerNormForward(const AotArgs& args) {
  const int o = ln::kFwdNumInputs;
  const mindpet::cpu::NormDims s{args.dim(ln::kFwdX, 0), args.dim(ln::kFwdX, 1)};
  const bool has_residual = args.scalar(ln::kFwdHasResidual) != 0.0;
  if (args.ndim(ln::kFwdX) != 2 || args.numel(ln::kFwdGamma) != s.d || args.numel(ln::kFwdBeta) != s.d ||
      (has_residual && args.numel(ln::kFwdResidual) != s.m * s.d) || args.numel(o + ln::kFwdY) != s.m * s.d ||
      args.numel(o + ln::kFwdMean) != s.m || args.numel(o + ln::kFwdRstd) != s.m) {
    return "shapes do not follow x [M,D], residual [M,D] or [1], gamma [D], beta [D]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {ln::kFwdX, ln::kFwdResidual, ln::kFwdGamma, ln::kFwdBeta,
                                           o + ln::kFwdY})) {
    return "x, residual, gamma, beta and y must share dtype float32 or float16";
  }
  if (args.dtype(o + ln::kFwdMean) != DType::kFloat32 || args.dtype(o + ln::kFwdRstd) != DType::kFloat32) {
    return "mean and rstd must be float32";
  }
  const float eps = static_cast<float>(args.scalar(ln::kFwdEpsilon));
  if (!(eps >= 0.0f)) return "epsilon must be >= 0";
  const FloatIn x(args, ln::kFwdX), r(args, ln::kFwdResidual, has_residual), gamma(args, ln::kFwdGamma),
      beta(args, ln::kFwdBeta);
  FloatOut y(args, o + ln::kFwdY);
  mindpet::cpu::ForwardF32(s, x.get(), r.get(), gamma.get(), beta.get(), eps, y.get(),
                           static_cast<float*>(args.data(o + ln::kFwdMean)),
                           static_cast<float*>(args.data(o + ln::kFwdRstd)));
  y.Commit();
  return {};
}

std::string RunLayerNormBackward(const AotArgs& args) {
  const int o = ln::kBwdNumInputs;
  const mindpet::cpu::NormDims s{args.dim(ln::kBwdX, 0), args.dim(ln::kBwdX, 1)};
  const bool has_residual = args.scalar(ln::kBwdHasResidual) != 0.0;
  if (args.ndim(ln::kBwdX) != 2 || args.numel(ln::kBwdDy) != s.m * s.d || args.numel(ln::kBwdGamma) != s.d ||
      (has_residual && args.numel(ln::kBwdResidual) != s.m * s.d) || args.numel(ln::kBwdMean) != s.m ||
      args.numel(ln::kBwdRstd) != s.m || args.numel(o + ln::kBwdDx) != s.m * s.d ||
      args.numel(o + ln::kBwdDGamma) != s.d || args.numel(o + ln::kBwdDBeta) != s.d) {
    return "shapes do not follow dy [M,D], x [M,D], residual [M,D] or [1], gamma [D], "
           "mean [M], rstd [M]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {ln::kBwdDy, ln::kBwdX, ln::kBwdResidual, ln::kBwdGamma, o + ln::kBwdDx,
                                           o + ln::kBwdDGamma, o + ln::kBwdDBeta})) {
    return "dy, x, residual, gamma and the gradients must share dtype float32 or float16";
  }
  if (args.dtype(ln::kBwdMean) != DType::kFloat32 || args.dtype(ln::kBwdRstd) != DType::kFloat32) {
    return "mean and rstd must be float32";
  }
  const FloatIn dy(args, ln::kBwdDy), x(args, ln::kBwdX), r(args, ln::kBwdResidual, has_residual),
      gamma(args, ln::kBwdGamma);
  FloatOut dx(args, o + ln::kBwdDx), dgamma(args, o + ln::kBwdDGamma), dbeta(args, o + ln::kBwdDBeta);
  const auto* mean = static_cast<const float*>(args.data(ln::kBwdMean));
  const auto* rstd = static_cast<const float*>(args.data(ln::kBwdRstd));
  mindpet::cpu::BackwardF32(s, dy.get(), x.get(), r.get(), gamma.get(), mean, rstd, dx.get(), dgamma.get(),
                            dbeta.get());
  dx.Commit();
  dgamma.Commit();
  dbeta.Commit();
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(LayerNormForward, ln::kFwdNumInputs + ln::kFwdNumOutputs, RunLayerNormForward)
MINDPET_AOT_ENTRY(LayerNormBackward, ln::kBwdNumInputs + ln::kBwdNumOutputs, RunLayerNormBackward)
