// lora_linear on CPU (contract: ops/CONTRACTS.md section 1).
//   forward : u = x_d A^T;  y = x W^T + b + s u B^T
//   backward, weights: g = dy B;  dB = s dy^T u;  dA = s g^T x_d
//   backward, input  : dx = dy W + s (g A) * mask
// Large M: participants take row chunks (parallel.h); the rank-R work runs over row tiles of a chunk
// while the tile is in cache, and the big GEMM (x W^T or dy W) runs once per chunk with beta = 1 on
// top of the low-rank term, so y / dx are written once and read once. Small M: participants own
// output columns. The backward is two entry points (weights, input) so a graph that needs no dx
// drops the input one; the one-pass LoraLinearBackward runs both. The mask is none, a tensor, or hashed from a
// dropout key and regenerated at each use (lora_mask.h).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "aot_args.h"
#include "blas.h"
#include "float_views.h"
#include "lora_mask.h"
#include "mindpet/contracts.h"
#include "parallel.h"
#include "partials.h"

namespace mindpet {
namespace cpu {
namespace {

struct LoraDims {
  int64_t m, k, n, r;
};

using MaskSource = lora_mask::Source;

// dst[rows, K] = x[row0 .., K] * mask (x_d rows, contiguous).
void MaskRows(const MaskSource& mask, const float* x, int64_t row0, int64_t rows, int64_t k, float* dst) {
  mask.Apply(row0, rows, 0, k, x + row0 * k, k, dst, k);
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

// Smallest row chunk: four cache tiles (the big GEMM of a chunk packs W once per chunk).
constexpr int64_t kTilesPerChunk = 4;

void ForwardF32(const LoraDims& d, const float* x, const float* w, const float* bias, const float* a,
                const float* b, const MaskSource& mask, float s, float* y, float* u) {
  if (d.m == 0) return;
  const std::vector<float> b_aug = bias != nullptr ? AugmentB(b, bias, d.n, d.r) : std::vector<float>();
  const float* b_aug_ptr = bias != nullptr ? b_aug.data() : nullptr;
  const int threads = ThreadsFor(d.m * d.n * (d.k + d.r));
  const int64_t tile = TileRows(d.k);

  if (SplitRows(d.m, threads)) {
    ParallelFor(d.m, threads, RowGrain(d.m, threads, kTilesPerChunk * tile), [&](Range rows, int64_t) {
      std::vector<float> scratch;
      const float* x_c = x + rows.begin * d.k;
      float* u_c = u + rows.begin * d.r;
      float* y_c = y + rows.begin * d.n;
      if (!mask.active()) {
        Sgemm(false, true, rows.size(), d.r, d.k, 1.0f, x_c, d.k, a, d.k, 0.0f, u_c, d.r);
      } else {
        std::vector<float> xd(static_cast<size_t>(tile * d.k));
        for (int64_t t = 0; t < rows.size(); t += tile) {
          const int64_t tr = std::min(tile, rows.size() - t);
          MaskRows(mask, x, rows.begin + t, tr, d.k, xd.data());
          Sgemm(false, true, tr, d.r, d.k, 1.0f, xd.data(), d.k, a, d.k, 0.0f, u_c + t * d.r, d.r);
        }
      }
      LowRankTerm(d, u_c, rows.size(), b, b_aug_ptr, 0, d.n, s, y_c, &scratch);
      Sgemm(false, true, rows.size(), d.n, d.k, 1.0f, x_c, d.k, w, d.k, 1.0f, y_c, d.n);
    });
    return;
  }

  // Few rows: u once, then participants own column blocks of y.
  if (!mask.active()) {
    Sgemm(false, true, d.m, d.r, d.k, 1.0f, x, d.k, a, d.k, 0.0f, u, d.r);
  } else {
    std::vector<float> xd(static_cast<size_t>(d.m * d.k));
    MaskRows(mask, x, 0, d.m, d.k, xd.data());
    Sgemm(false, true, d.m, d.r, d.k, 1.0f, xd.data(), d.k, a, d.k, 0.0f, u, d.r);
  }
  ParallelColumns(d.n, threads, [&](Range cols) {
    std::vector<float> scratch;
    LowRankTerm(d, u, d.m, b, b_aug_ptr, cols.begin, cols.end, s, y, &scratch);
    Sgemm(false, true, d.m, cols.size(), d.k, 1.0f, x, d.k, w + cols.begin * d.k, d.k, 1.0f, y + cols.begin, d.n);
  });
}

// g = dy B [M, R] (float32), dA = s g^T x_d [R, K], dB = s dy^T u [N, R].
void BackwardWeightsF32(const LoraDims& d, const float* dy, const float* x, const float* b, const float* u,
                        const MaskSource& mask, float s, float* da, float* db, float* g) {
  if (d.m == 0) {
    std::fill(da, da + d.r * d.k, 0.0f);
    std::fill(db, db + d.n * d.r, 0.0f);
    return;
  }
  const int threads = ThreadsFor(d.m * d.r * (2 * d.n + d.k));

  if (SplitRows(d.m, threads)) {
    // Per-chunk partial sums of dA [R, K] and dB^T [R, N] (u^T dy streams dy with the long side as
    // the GEMM's N: faster than dy^T u for wide ranks), reduced and scaled by s at the end.
    const int64_t da_size = d.r * d.k;
    const int64_t db_size = d.n * d.r;
    const int64_t tile = TileRows(std::max(d.n, d.k));
    const std::vector<Range> chunks = PlanChunks(d.m, threads, RowGrain(d.m, threads, kTilesPerChunk * tile));
    ThreadPartials partials(static_cast<int64_t>(chunks.size()), da_size + db_size);
    ParallelFor(chunks, threads, [&](Range rows, int64_t chunk) {
      float* da_part = partials.part(chunk);
      float* db_part = da_part + da_size;
      std::vector<float> xd(mask.active() ? static_cast<size_t>(tile * d.k) : 0);
      for (int64_t t = 0; t < rows.size(); t += tile) {
        const int64_t row0 = rows.begin + t;
        const int64_t tr = std::min(tile, rows.size() - t);
        const float* dy_t = dy + row0 * d.n;
        float* g_t = g + row0 * d.r;
        const float beta = t == 0 ? 0.0f : 1.0f;  // the chunk's first tile initialises its partials
        // g = dy B ; dB^T += u^T dy   (the dy tile is read from cache by both)
        Sgemm(false, false, tr, d.r, d.n, 1.0f, dy_t, d.n, b, d.r, 0.0f, g_t, d.r);
        Sgemm(true, false, d.r, d.n, tr, 1.0f, u + row0 * d.r, d.r, dy_t, d.n, beta, db_part, d.n);
        // dA += g^T x_d
        const float* xd_t = x + row0 * d.k;
        if (mask.active()) {
          MaskRows(mask, x, row0, tr, d.k, xd.data());
          xd_t = xd.data();
        }
        Sgemm(true, false, d.r, d.k, tr, 1.0f, g_t, d.r, xd_t, d.k, beta, da_part, d.k);
      }
    });
    partials.ReduceInto(0, da_size, s, da);
    std::vector<float> db_t(static_cast<size_t>(db_size));  // partials hold dB^T [R, N]
    partials.ReduceInto(da_size, db_size, s, db_t.data());
    for (int64_t i = 0; i < d.n; ++i) {
      for (int64_t j = 0; j < d.r; ++j) db[i * d.r + j] = db_t[j * d.n + i];
    }
    return;
  }

  // Few rows: g once, then participants own column blocks of dB (over N) and of dA (over K).
  Sgemm(false, false, d.m, d.r, d.n, 1.0f, dy, d.n, b, d.r, 0.0f, g, d.r);
  std::vector<float> xd;
  const float* xd_ptr = x;
  if (mask.active()) {
    xd.resize(static_cast<size_t>(d.m * d.k));
    MaskRows(mask, x, 0, d.m, d.k, xd.data());
    xd_ptr = xd.data();
  }
  ParallelFor(threads, threads, 1, [&](Range parts, int64_t) {
    for (int64_t p = parts.begin; p < parts.end; ++p) {
      const Range ncols = SplitRange(d.n, threads, static_cast<int>(p), 16);
      if (ncols.size() > 0) {
        Sgemm(true, false, ncols.size(), d.r, d.m, s, dy + ncols.begin, d.n, u, d.r, 0.0f, db + ncols.begin * d.r,
              d.r);
      }
      const Range kcols = SplitRange(d.k, threads, static_cast<int>(p), 16);
      if (kcols.size() > 0) {
        Sgemm(true, false, d.r, kcols.size(), d.m, s, g, d.r, xd_ptr + kcols.begin, d.k, 0.0f, da + kcols.begin, d.k);
      }
    }
  });
}

// dx = dy W + s (g A) * mask   [M, K]
void BackwardInputF32(const LoraDims& d, const float* dy, const float* w, const float* a, const float* g,
                      const MaskSource& mask, float s, float* dx) {
  if (d.m == 0) return;
  const int threads = ThreadsFor(d.m * d.k * (d.n + d.r));
  // dx[rows, cols] = s (g A)[rows, cols] * mask + dy[rows] W[:, cols]
  auto block = [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
    float* dx_b = dx + r0 * d.k + c0;
    Sgemm(false, false, rows, cols, d.r, s, g + r0 * d.r, d.r, a + c0, d.k, 0.0f, dx_b, d.k);
    if (mask.active()) mask.Apply(r0, rows, c0, cols, dx_b, d.k, dx_b, d.k);
    Sgemm(false, false, rows, cols, d.n, 1.0f, dy + r0 * d.n, d.n, w + c0, d.k, 1.0f, dx_b, d.k);
  };
  if (SplitRows(d.m, threads)) {
    const int64_t tile = TileRows(d.k);
    ParallelFor(d.m, threads, RowGrain(d.m, threads, kTilesPerChunk * tile),
                [&](Range rows, int64_t) { block(rows.begin, rows.size(), 0, d.k); });
    return;
  }
  ParallelColumns(d.k, threads, [&](Range cols) { block(0, d.m, cols.begin, cols.size()); });
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
using MaskSource = mindpet::cpu::lora_mask::Source;
namespace ll = mindpet::contracts::lora_linear;

namespace {
std::string RunLoraLinearForward(const AotArgs& args) {
  mindpet::cpu::LoraDims d{};
  const std::string err = mindpet::cpu::CheckShapes(args, ll::kFwdX, ll::kFwdWeight, ll::kFwdLoraA, ll::kFwdLoraB, &d);
  if (!err.empty()) return err;
  const bool has_bias = args.scalar(ll::kFwdHasBias) != 0.0;
  const int mask_mode = static_cast<int>(args.scalar(ll::kFwdHasMask));
  const float s = static_cast<float>(args.scalar(ll::kFwdScale));
  const int y_idx = ll::kFwdNumInputs + ll::kFwdY;
  const int u_idx = ll::kFwdNumInputs + ll::kFwdU;
  if (!mindpet::cpu::SameFloatDType(args, {ll::kFwdX, ll::kFwdWeight, ll::kFwdLoraA, ll::kFwdLoraB, y_idx, u_idx})) {
    return "x, weight, lora_a, lora_b and the outputs must share dtype float32 or float16";
  }
  if (has_bias && (args.numel(ll::kFwdBias) != d.n || args.dtype(ll::kFwdBias) != args.dtype(ll::kFwdX))) {
    return "bias must be [N] with the dtype of x";
  }
  const std::string bad_mask =
      mindpet::cpu::lora_mask::Check(args, ll::kFwdMask, mask_mode, args.dtype(ll::kFwdX), d.m, d.k);
  if (!bad_mask.empty()) return bad_mask;
  const std::string no_blas = mindpet::cpu::RequireBlas();
  if (!no_blas.empty()) return no_blas;

  const FloatIn x(args, ll::kFwdX), w(args, ll::kFwdWeight), a(args, ll::kFwdLoraA), b(args, ll::kFwdLoraB);
  const FloatIn bias(args, ll::kFwdBias, has_bias);
  const MaskSource mask(args, ll::kFwdMask, mask_mode, args.dtype(ll::kFwdX), d.k);
  FloatOut y(args, y_idx), u(args, u_idx);
  mindpet::cpu::ForwardF32(d, x.get(), w.get(), bias.get(), a.get(), b.get(), mask, s, y.get(), u.get());
  mindpet::cpu::CommitAll({&y, &u});
  return {};
}

// Checks of the backward entry points: dy [M,N], u or g [M,R], the mask; "" when they hold.
std::string CheckBackward(const AotArgs& args, const mindpet::cpu::LoraDims& d, int dy, int mr, int mask,
                          int mask_mode) {
  if (args.numel(dy) != d.m * d.n || args.numel(mr) != d.m * d.r) return "dy must be [M,N] and u, g [M,R]";
  const std::string bad_mask = mindpet::cpu::lora_mask::Check(args, mask, mask_mode, args.dtype(dy), d.m, d.k);
  if (!bad_mask.empty()) return bad_mask;
  return mindpet::cpu::RequireBlas();
}

std::string RunLoraLinearBackward(const AotArgs& args) {
  mindpet::cpu::LoraDims d{};
  const std::string err = mindpet::cpu::CheckShapes(args, ll::kBwdX, ll::kBwdWeight, ll::kBwdLoraA, ll::kBwdLoraB, &d);
  if (!err.empty()) return err;
  const int mask_mode = static_cast<int>(args.scalar(ll::kBwdHasMask));
  const float s = static_cast<float>(args.scalar(ll::kBwdScale));
  const int o = ll::kBwdNumInputs;
  if (!mindpet::cpu::SameFloatDType(args, {ll::kBwdDy, ll::kBwdX, ll::kBwdWeight, ll::kBwdLoraA, ll::kBwdLoraB,
                                           ll::kBwdU, o + ll::kBwdDx, o + ll::kBwdDLoraA, o + ll::kBwdDLoraB})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  const std::string bad = CheckBackward(args, d, ll::kBwdDy, ll::kBwdU, ll::kBwdMask, mask_mode);
  if (!bad.empty()) return bad;

  const FloatIn dy(args, ll::kBwdDy), x(args, ll::kBwdX), w(args, ll::kBwdWeight), a(args, ll::kBwdLoraA),
      b(args, ll::kBwdLoraB), u(args, ll::kBwdU);
  const MaskSource mask(args, ll::kBwdMask, mask_mode, args.dtype(ll::kBwdDy), d.k);
  FloatOut dx(args, o + ll::kBwdDx), da(args, o + ll::kBwdDLoraA), db(args, o + ll::kBwdDLoraB);
  std::vector<float> g(static_cast<size_t>(d.m * d.r));
  mindpet::cpu::BackwardWeightsF32(d, dy.get(), x.get(), b.get(), u.get(), mask, s, da.get(), db.get(), g.data());
  mindpet::cpu::BackwardInputF32(d, dy.get(), w.get(), a.get(), g.data(), mask, s, dx.get());
  mindpet::cpu::CommitAll({&dx, &da, &db});
  return {};
}

std::string RunLoraLinearBackwardWeights(const AotArgs& args) {
  const int o = ll::kBwdWNumInputs;
  const int g_idx = o + ll::kBwdWG;
  if (args.ndim(ll::kBwdWX) != 2 || args.ndim(ll::kBwdWLoraB) != 2) return "x and lora_b must be 2-D";
  const mindpet::cpu::LoraDims d{args.dim(ll::kBwdWX, 0), args.dim(ll::kBwdWX, 1), args.dim(ll::kBwdWLoraB, 0),
                                 args.dim(ll::kBwdWLoraB, 1)};
  if (args.numel(o + ll::kBwdWDLoraA) != d.r * d.k || args.numel(o + ll::kBwdWDLoraB) != d.n * d.r ||
      args.numel(g_idx) != d.m * d.r) {
    return "outputs must be d_lora_a [R,K], d_lora_b [N,R], g [M,R]";
  }
  const int mask_mode = static_cast<int>(args.scalar(ll::kBwdWHasMask));
  const float s = static_cast<float>(args.scalar(ll::kBwdWScale));
  if (!mindpet::cpu::SameFloatDType(args, {ll::kBwdWDy, ll::kBwdWX, ll::kBwdWLoraB, ll::kBwdWU,
                                           o + ll::kBwdWDLoraA, o + ll::kBwdWDLoraB})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  if (args.dtype(g_idx) != mindpet::cpu::DType::kFloat32) return "g must be float32";
  const std::string bad = CheckBackward(args, d, ll::kBwdWDy, ll::kBwdWU, ll::kBwdWMask, mask_mode);
  if (!bad.empty()) return bad;

  const FloatIn dy(args, ll::kBwdWDy), x(args, ll::kBwdWX), b(args, ll::kBwdWLoraB), u(args, ll::kBwdWU);
  const MaskSource mask(args, ll::kBwdWMask, mask_mode, args.dtype(ll::kBwdWDy), d.k);
  FloatOut da(args, o + ll::kBwdWDLoraA), db(args, o + ll::kBwdWDLoraB);
  mindpet::cpu::BackwardWeightsF32(d, dy.get(), x.get(), b.get(), u.get(), mask, s, da.get(), db.get(),
                                   static_cast<float*>(args.data(g_idx)));
  mindpet::cpu::CommitAll({&da, &db});
  return {};
}

std::string RunLoraLinearBackwardInput(const AotArgs& args) {
  const int o = ll::kBwdXNumInputs;
  if (args.ndim(ll::kBwdXWeight) != 2 || args.ndim(ll::kBwdXLoraA) != 2 || args.ndim(ll::kBwdXDy) != 2) {
    return "dy, weight and lora_a must be 2-D";
  }
  const mindpet::cpu::LoraDims d{args.dim(ll::kBwdXDy, 0), args.dim(ll::kBwdXWeight, 1),
                                 args.dim(ll::kBwdXWeight, 0), args.dim(ll::kBwdXLoraA, 0)};
  if (args.dim(ll::kBwdXDy, 1) != d.n || args.dim(ll::kBwdXLoraA, 1) != d.k || args.numel(o + ll::kBwdXDx) != d.m * d.k) {
    return "shapes do not follow dy [M,N], weight [N,K], lora_a [R,K], dx [M,K]";
  }
  const int mask_mode = static_cast<int>(args.scalar(ll::kBwdXHasMask));
  const float s = static_cast<float>(args.scalar(ll::kBwdXScale));
  if (!mindpet::cpu::SameFloatDType(args, {ll::kBwdXDy, ll::kBwdXWeight, ll::kBwdXLoraA, o + ll::kBwdXDx})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  if (args.dtype(ll::kBwdXG) != mindpet::cpu::DType::kFloat32) return "g must be float32";
  const std::string bad = CheckBackward(args, d, ll::kBwdXDy, ll::kBwdXG, ll::kBwdXMask, mask_mode);
  if (!bad.empty()) return bad;

  const FloatIn dy(args, ll::kBwdXDy), w(args, ll::kBwdXWeight), a(args, ll::kBwdXLoraA);
  const MaskSource mask(args, ll::kBwdXMask, mask_mode, args.dtype(ll::kBwdXDy), d.k);
  FloatOut dx(args, o + ll::kBwdXDx);
  mindpet::cpu::BackwardInputF32(d, dy.get(), w.get(), a.get(), static_cast<const float*>(args.data(ll::kBwdXG)),
                                 mask, s, dx.get());
  mindpet::cpu::CommitAll({&dx});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(LoraLinearForward, ll::kFwdNumInputs + ll::kFwdNumOutputs, RunLoraLinearForward)
MINDPET_AOT_ENTRY(LoraLinearBackward, ll::kBwdNumInputs + ll::kBwdNumOutputs, RunLoraLinearBackward)
MINDPET_AOT_ENTRY(LoraLinearBackwardWeights, ll::kBwdWNumInputs + ll::kBwdWNumOutputs, RunLoraLinearBackwardWeights)
MINDPET_AOT_ENTRY(LoraLinearBackwardInput, ll::kBwdXNumInputs + ll::kBwdXNumOutputs, RunLoraLinearBackwardInput)
