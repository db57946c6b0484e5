// lora_linear on CPU (contract: ops/CONTRACTS.md section 1).
//   forward : u = x_d A^T;  y = x W^T + b + s u B^T
//   backward: g = dy B;  dB = s dy^T u;  dA = s g^T x_d;  dx = dy W + s (g A) * mask
// Large M: each thread owns a block of rows; the rank-R work runs over row tiles of that block while
// the tile is in cache, and the big GEMM (x W^T or dy W) runs once per block with beta = 1 on top of
// the low-rank term, so y / dx are written once and read once. Small M: threads own output columns.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "aot_args.h"
#include "blas.h"
#include "export.h"
#include "float_views.h"
#include "mindpet/contracts.h"
#include "parallel.h"
#include "partials.h"

namespace mindpet {
namespace cpu {
namespace {

struct LoraDims {
  int64_t m, k, n, r;
};

// Rows per tile of the rank-R work: a tile of dy (tile x N floats) stays within ~256 KiB of L2.
int64_t TileRows(int64_t width) { return std::clamp<int64_t>((64 * 1024) / std::max<int64_t>(width, 1), 16, 256); }

// dst[rows, cols] = x * mask (elementwise, contiguous rows).
void MaskRows(const float* x, const float* mask, int64_t rows, int64_t cols, float* dst) {
  const int64_t n = rows * cols;
  for (int64_t i = 0; i < n; ++i) dst[i] = x[i] * mask[i];
}

// B_aug [N, R+1] = [B | bias]: the bias joins the rank-R GEMM (u_aug = [s u | 1]) for free.
std::vector<float> AugmentB(const float* b, const float* bias, int64_t n, int64_t r) {
  std::vector<float> out(static_cast<size_t>(n * (r + 1)));
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(&out[i * (r + 1)], b + i * r, sizeof(float) * r);
    out[i * (r + 1) + r] = bias[i];
  }
  return out;
}

// y[rows, cols] = s u B[cols]^T (+ bias[cols]) for `rows` rows of u starting at u_rows.
void LowRankTerm(const LoraDims& d, const float* u_rows, int64_t rows, const float* b, const float* b_aug,
                 int64_t c0, int64_t c1, float s, float* y_rows, std::vector<float>* scratch) {
  const int64_t r = d.r;
  if (b_aug == nullptr) {
    Sgemm(false, true, rows, c1 - c0, r, s, u_rows, r, b + c0 * r, r, 0.0f, y_rows + c0, d.n);
    return;
  }
  scratch->resize(static_cast<size_t>(rows * (r + 1)));
  float* ua = scratch->data();
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < r; ++j) ua[i * (r + 1) + j] = s * u_rows[i * r + j];
    ua[i * (r + 1) + r] = 1.0f;
  }
  Sgemm(false, true, rows, c1 - c0, r + 1, 1.0f, ua, r + 1, b_aug + c0 * (r + 1), r + 1, 0.0f, y_rows + c0, d.n);
}

void ForwardF32(const LoraDims& d, const float* x, const float* w, const float* bias, const float* a,
                const float* b, const float* mask, float s, float* y, float* u) {
  if (d.m == 0) return;
  const std::vector<float> b_aug = bias != nullptr ? AugmentB(b, bias, d.n, d.r) : std::vector<float>();
  const float* b_aug_ptr = bias != nullptr ? b_aug.data() : nullptr;
  const int threads = ThreadsFor(d.m * d.n * (d.k + d.r));

  if (SplitRows(d.m, threads)) {
#pragma omp parallel num_threads(threads)
    {
      const Range rows = SplitRange(d.m, NumThreads(), ThreadId());
      std::vector<float> scratch;
      if (rows.size() > 0) {
        const float* x_c = x + rows.begin * d.k;
        float* u_c = u + rows.begin * d.r;
        float* y_c = y + rows.begin * d.n;
        if (mask == nullptr) {
          Sgemm(false, true, rows.size(), d.r, d.k, 1.0f, x_c, d.k, a, d.k, 0.0f, u_c, d.r);
        } else {
          const int64_t tile = TileRows(d.k);
          std::vector<float> xd(static_cast<size_t>(tile * d.k));
          for (int64_t t = 0; t < rows.size(); t += tile) {
            const int64_t tr = std::min(tile, rows.size() - t);
            MaskRows(x_c + t * d.k, mask + (rows.begin + t) * d.k, tr, d.k, xd.data());
            Sgemm(false, true, tr, d.r, d.k, 1.0f, xd.data(), d.k, a, d.k, 0.0f, u_c + t * d.r, d.r);
          }
        }
        LowRankTerm(d, u_c, rows.size(), b, b_aug_ptr, 0, d.n, s, y_c, &scratch);
        Sgemm(false, true, rows.size(), d.n, d.k, 1.0f, x_c, d.k, w, d.k, 1.0f, y_c, d.n);
      }
    }
    return;
  }

  // Few rows: u once, then threads own column blocks of y.
  if (mask == nullptr) {
    Sgemm(false, true, d.m, d.r, d.k, 1.0f, x, d.k, a, d.k, 0.0f, u, d.r);
  } else {
    std::vector<float> xd(static_cast<size_t>(d.m * d.k));
    MaskRows(x, mask, d.m, d.k, xd.data());
    Sgemm(false, true, d.m, d.r, d.k, 1.0f, xd.data(), d.k, a, d.k, 0.0f, u, d.r);
  }
#pragma omp parallel num_threads(threads)
  {
    const Range cols = SplitRange(d.n, NumThreads(), ThreadId(), 16);
    std::vector<float> scratch;
    if (cols.size() > 0) {
      LowRankTerm(d, u, d.m, b, b_aug_ptr, cols.begin, cols.end, s, y, &scratch);
      Sgemm(false, true, d.m, cols.size(), d.k, 1.0f, x, d.k, w + cols.begin * d.k, d.k, 1.0f, y + cols.begin, d.n);
    }
  }
}

void BackwardF32(const LoraDims& d, const float* dy, const float* x, const float* w, const float* a,
                 const float* b, const float* u, const float* mask, float s, float* dx, float* da, float* db) {
  if (d.m == 0) {
    std::fill(da, da + d.r * d.k, 0.0f);
    std::fill(db, db + d.n * d.r, 0.0f);
    return;
  }
  const int threads = ThreadsFor(d.m * d.n * (d.k + d.r));

  if (SplitRows(d.m, threads)) {
    // Per-thread partial sums of dA [R, K] and dB^T [R, N] (u^T dy streams dy with the long side as
    // the GEMM's N: faster than dy^T u for wide ranks), reduced and scaled by s at the end.
    const int64_t da_size = d.r * d.k;
    const int64_t db_size = d.n * d.r;
    ThreadPartials partials(threads, da_size + db_size);
#pragma omp parallel num_threads(threads)
    {
      const int tid = ThreadId();
      if (tid == 0) partials.SetUsed(NumThreads());
      const Range rows = SplitRange(d.m, NumThreads(), tid);
      float* da_part = partials.part(tid);
      float* db_part = da_part + da_size;
      if (rows.size() == 0) {
        partials.Zero(tid);
      } else {
        const int64_t tile = TileRows(std::max(d.n, d.k));
        std::vector<float> g(static_cast<size_t>(tile * d.r));
        std::vector<float> xd(mask != nullptr ? static_cast<size_t>(tile * d.k) : 0);
        for (int64_t t = 0; t < rows.size(); t += tile) {
          const int64_t row0 = rows.begin + t;
          const int64_t tr = std::min(tile, rows.size() - t);
          const float* dy_t = dy + row0 * d.n;
          const float* x_t = x + row0 * d.k;
          float* dx_t = dx + row0 * d.k;
          const float beta = t == 0 ? 0.0f : 1.0f;  // the first tile initialises the partials
          // g = dy B ; dB^T += u^T dy   (the dy tile is read from cache by both)
          Sgemm(false, false, tr, d.r, d.n, 1.0f, dy_t, d.n, b, d.r, 0.0f, g.data(), d.r);
          Sgemm(true, false, d.r, d.n, tr, 1.0f, u + row0 * d.r, d.r, dy_t, d.n, beta, db_part, d.n);  // dB^T
          // dx = s (g A) [* mask] ; dA += g^T x_d
          Sgemm(false, false, tr, d.k, d.r, s, g.data(), d.r, a, d.k, 0.0f, dx_t, d.k);
          const float* xd_t = x_t;
          if (mask != nullptr) {
            const float* mask_t = mask + row0 * d.k;
            for (int64_t i = 0; i < tr * d.k; ++i) dx_t[i] *= mask_t[i];
            MaskRows(x_t, mask_t, tr, d.k, xd.data());
            xd_t = xd.data();
          }
          Sgemm(true, false, d.r, d.k, tr, 1.0f, g.data(), d.r, xd_t, d.k, beta, da_part, d.k);
        }
        // dx += dy W over the whole block (one GEMM: the weight is packed once per thread)
        Sgemm(false, false, rows.size(), d.k, d.n, 1.0f, dy + rows.begin * d.n, d.n, w, d.k, 1.0f,
              dx + rows.begin * d.k, d.k);
      }
    }
    partials.ReduceInto(0, da_size, s, da);
    std::vector<float> db_t(static_cast<size_t>(db_size));  // partials hold dB^T [R, N]
    partials.ReduceInto(da_size, db_size, s, db_t.data());
    for (int64_t i = 0; i < d.n; ++i) {
      for (int64_t j = 0; j < d.r; ++j) db[i * d.r + j] = db_t[j * d.n + i];
    }
    return;
  }

  // Few rows: g once, then threads own column blocks of dB (over N) and of dx, dA (over K).
  std::vector<float> g(static_cast<size_t>(d.m * d.r));
  Sgemm(false, false, d.m, d.r, d.n, 1.0f, dy, d.n, b, d.r, 0.0f, g.data(), d.r);
  std::vector<float> xd;
  const float* xd_ptr = x;
  if (mask != nullptr) {
    xd.resize(static_cast<size_t>(d.m * d.k));
    MaskRows(x, mask, d.m, d.k, xd.data());
    xd_ptr = xd.data();
  }
#pragma omp parallel num_threads(threads)
  {
    const int nt = NumThreads();
    const int tid = ThreadId();
    const Range ncols = SplitRange(d.n, nt, tid, 16);
    if (ncols.size() > 0) {
      Sgemm(true, false, ncols.size(), d.r, d.m, s, dy + ncols.begin, d.n, u, d.r, 0.0f, db + ncols.begin * d.r, d.r);
    }
    const Range kcols = SplitRange(d.k, nt, tid, 16);
    if (kcols.size() > 0) {
      const int64_t k0 = kcols.begin;
      const int64_t kc = kcols.size();
      Sgemm(false, false, d.m, kc, d.r, s, g.data(), d.r, a + k0, d.k, 0.0f, dx + k0, d.k);
      if (mask != nullptr) {
        for (int64_t i = 0; i < d.m; ++i) {
          for (int64_t j = k0; j < k0 + kc; ++j) dx[i * d.k + j] *= mask[i * d.k + j];
        }
      }
      Sgemm(false, false, d.m, kc, d.n, 1.0f, dy, d.n, w + k0, d.k, 1.0f, dx + k0, d.k);
      Sgemm(true, false, d.r, kc, d.m, s, g.data(), d.r, xd_ptr + k0, d.k, 0.0f, da + k0, d.k);
    }
  }
}

// Shape and dtype checks shared by both entry points; returns an empty string when they hold.
std::string CheckShapes(const AotArgs& args, int x, int w, int a, int b, LoraDims* d) {
  if (args.ndim(x) != 2 || args.ndim(w) != 2 || args.ndim(a) != 2 || args.ndim(b) != 2) {
    return "x, weight, lora_a, lora_b must be 2-D";
  }
  d->m = args.dim(x, 0);
  d->k = args.dim(x, 1);
  d->n = args.dim(w, 0);
  d->r = args.dim(a, 0);
  if (args.dim(w, 1) != d->k || args.dim(a, 1) != d->k || args.dim(b, 0) != d->n || args.dim(b, 1) != d->r) {
    return "shapes do not follow x [M,K], weight [N,K], lora_a [R,K], lora_b [N,R]";
  }
  return "";
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace ll = mindpet::contracts::lora_linear;

namespace {
std::string RunLoraLinearForward(const AotArgs& args) {
  mindpet::cpu::LoraDims d{};
  const std::string err = mindpet::cpu::CheckShapes(args, ll::kFwdX, ll::kFwdWeight, ll::kFwdLoraA, ll::kFwdLoraB, &d);
  if (!err.empty()) return err;
  const bool has_bias = args.scalar(ll::kFwdHasBias) != 0.0;
  const bool has_mask = args.scalar(ll::kFwdHasMask) != 0.0;
  const float s = static_cast<float>(args.scalar(ll::kFwdScale));
  const int y_idx = ll::kFwdNumInputs + ll::kFwdY;
  const int u_idx = ll::kFwdNumInputs + ll::kFwdU;
  if (!mindpet::cpu::SameFloatDType(args, {ll::kFwdX, ll::kFwdWeight, ll::kFwdLoraA, ll::kFwdLoraB, y_idx, u_idx})) {
    return "x, weight, lora_a, lora_b and the outputs must share dtype float32 or float16";
  }
  if (has_bias && (args.numel(ll::kFwdBias) != d.n || args.dtype(ll::kFwdBias) != args.dtype(ll::kFwdX))) {
    return "bias must be [N] with the dtype of x";
  }
  if (has_mask && (args.numel(ll::kFwdMask) != d.m * d.k || args.dtype(ll::kFwdMask) != args.dtype(ll::kFwdX))) {
    return "mask must have the shape and dtype of x";
  }
  if (!mindpet::cpu::BlasReady()) return mindpet::cpu::BlasDescription();

  const FloatIn x(args, ll::kFwdX), w(args, ll::kFwdWeight), a(args, ll::kFwdLoraA), b(args, ll::kFwdLoraB);
  const FloatIn bias(args, ll::kFwdBias, has_bias), mask(args, ll::kFwdMask, has_mask);
  FloatOut y(args, y_idx), u(args, u_idx);
  mindpet::cpu::ForwardF32(d, x.get(), w.get(), bias.get(), a.get(), b.get(), mask.get(), s, y.get(), u.get());
  y.Commit();
  u.Commit();
  return {};
}

std::string RunLoraLinearBackward(const AotArgs& args) {
  mindpet::cpu::LoraDims d{};
  const std::string err = mindpet::cpu::CheckShapes(args, ll::kBwdX, ll::kBwdWeight, ll::kBwdLoraA, ll::kBwdLoraB, &d);
  if (!err.empty()) return err;
  const bool has_mask = args.scalar(ll::kBwdHasMask) != 0.0;
  const float s = static_cast<float>(args.scalar(ll::kBwdScale));
  const int dx_idx = ll::kBwdNumInputs + ll::kBwdDx;
  const int da_idx = ll::kBwdNumInputs + ll::kBwdDLoraA;
  const int db_idx = ll::kBwdNumInputs + ll::kBwdDLoraB;
  if (!mindpet::cpu::SameFloatDType(args, {ll::kBwdDy, ll::kBwdX, ll::kBwdWeight, ll::kBwdLoraA, ll::kBwdLoraB,
                                           ll::kBwdU, dx_idx, da_idx, db_idx})) {
    return "all tensors must share dtype float32 or float16";
  }
  if (args.numel(ll::kBwdDy) != d.m * d.n || args.numel(ll::kBwdU) != d.m * d.r) {
    return "dy must be [M,N] and u [M,R]";
  }
  if (has_mask && (args.numel(ll::kBwdMask) != d.m * d.k || args.dtype(ll::kBwdMask) != args.dtype(ll::kBwdX))) {
    return "mask must have the shape and dtype of x";
  }
  if (!mindpet::cpu::BlasReady()) return mindpet::cpu::BlasDescription();

  const FloatIn dy(args, ll::kBwdDy), x(args, ll::kBwdX), w(args, ll::kBwdWeight), a(args, ll::kBwdLoraA),
      b(args, ll::kBwdLoraB), u(args, ll::kBwdU), mask(args, ll::kBwdMask, has_mask);
  FloatOut dx(args, dx_idx), da(args, da_idx), db(args, db_idx);
  mindpet::cpu::BackwardF32(d, dy.get(), x.get(), w.get(), a.get(), b.get(), u.get(), mask.get(), s, dx.get(),
                            da.get(), db.get());
  dx.Commit();
  da.Commit();
  db.Commit();
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(LoraLinearForward, ll::kFwdNumInputs + ll::kFwdNumOutputs, RunLoraLinearForward)
MINDPET_AOT_ENTRY(LoraLinearBackward, ll::kBwdNumInputs + ll::kBwdNumOutputs, RunLoraLinearBackward)
