// quant_lora_linear on CPU (contract: ops/CONTRACTS.md section 6).
//   forward       : u = x_d A^T;  y = x deq(W)^T + b + s u B^T
//   input gradient: dx = dy deq(W) + s (g A) * mask       (weight gradients: lora_linear's weights op)
// W is never dequantised whole: the forward dequantises panels of rows of W (a few hundred KiB of
// float32) and runs y[:, panel] += x panel^T; the input gradient dequantises blocks of columns and
// runs dx[:, block] += dy block. Participants (parallel.h) own contiguous runs of panels / blocks, so
// W is dequantised once per call, and each owns the output columns it writes. The mask is none, a tensor,
// or hashed from a dropout key and regenerated at each use (lora_mask.h, as lora_linear).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "aot_args.h"
#include "blas.h"
#include "dequant.h"
#include "float_views.h"
#include "lora_mask.h"
#include "mindpet/contracts.h"
#include "parallel.h"

namespace mindpet {
namespace cpu {
namespace {

using MaskSource = lora_mask::Source;

struct QuantDims {
  int64_t m, k, n, r;
};

// The float32 panel of a participant, counted by QuantWorkspace() while alive.
class Workspace {
 public:
  explicit Workspace(int64_t floats) : buf_(static_cast<size_t>(floats)) {
    QuantWorkspace().Add(bytes());
  }
  ~Workspace() { QuantWorkspace().Remove(bytes()); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  float* data() { return buf_.data(); }

 private:
  int64_t bytes() const { return static_cast<int64_t>(buf_.size() * sizeof(float)); }
  std::vector<float> buf_;
};

constexpr int64_t kPanelFloats = 64 * 1024;  // 256 KiB of float32: half a core's L2

// Rows of W per forward panel: ~kPanelFloats floats (4x that for many rows of x, where packing x
// once per panel dominates), a multiple of 4, in [4, 256].
int64_t PanelRows(int64_t m, int64_t k) {
  const int64_t target = m >= 256 ? 4 * kPanelFloats : kPanelFloats;
  const int64_t rows = std::max<int64_t>(4, std::min<int64_t>(256, target / std::max<int64_t>(k, 1)));
  return rows / 4 * 4;
}

// Columns of W per input-gradient block: ~kPanelFloats floats (4x for many rows), a multiple of 32
// (the dequantiser's fast runs), in [32, 1024].
int64_t BlockCols(int64_t m, int64_t n) {
  const int64_t target = m >= 256 ? 4 * kPanelFloats : kPanelFloats;
  const int64_t cols = std::max<int64_t>(32, std::min<int64_t>(1024, target / std::max<int64_t>(n, 1)));
  return cols / 32 * 32;
}

// Runs body(begin, end) over runs of `units` units of `unit` each, one run per chunk of
// parallel.h's plan (the participants take them dynamically).
template <typename Body>
void ParallelUnits(int64_t total, int64_t unit, int threads, Body body) {
  const int64_t units = (total + unit - 1) / unit;
  ParallelFor(units, threads, 1, [&](Range run, int64_t) {
    const int64_t begin = run.begin * unit;
    const int64_t end = std::min(total, run.end * unit);
    if (end > begin) body(begin, end);
  });
}

// u = x_d A^T [M, R] (row chunks; x * mask in cache-sized tiles).
void LowRankInput(const QuantDims& d, const float* x, const float* a, const MaskSource& mask, float* u) {
  const int threads = ThreadsFor(d.m * d.r * d.k);
  const int64_t tile = TileRows(d.k);
  ParallelFor(d.m, threads, RowGrain(d.m, threads, 4 * tile), [&](Range rows, int64_t) {
    const float* x_c = x + rows.begin * d.k;
    float* u_c = u + rows.begin * d.r;
    if (!mask.active()) {
      Sgemm(false, true, rows.size(), d.r, d.k, 1.0f, x_c, d.k, a, d.k, 0.0f, u_c, d.r);
      return;
    }
    std::vector<float> xd(static_cast<size_t>(std::min(tile, rows.size()) * d.k));
    for (int64_t t = 0; t < rows.size(); t += tile) {
      const int64_t tr = std::min(tile, rows.size() - t);
      mask.Apply(rows.begin + t, tr, 0, d.k, x_c + t * d.k, d.k, xd.data(), d.k);
      Sgemm(false, true, tr, d.r, d.k, 1.0f, xd.data(), d.k, a, d.k, 0.0f, u_c + t * d.r, d.r);
    }
  });
}

// Many rows (>= kManyRowsPerThread per thread): the GEMMs want their whole output width (a panel of
// a few hundred output columns costs ~25 % at M = 4096), so participants take row chunks and walk
// slices of the reduction dimension instead, each chunk dequantising W once more (~1 % of its GEMM).
constexpr int64_t kManyRowsPerThread = 1024;
constexpr int64_t kSliceFloats = 256 * 1024;  // 1 MiB of float32: a core's L2

inline bool ManyRows(int64_t m, int threads) { return m >= kManyRowsPerThread * std::max(threads, 1); }

// y[rows] = s u B^T + bias, then += sum over k-slices x[rows, slice] W[:, slice]^T.
void ForwardManyRows(const QuantDims& d, const QuantWeight& q, const float* x, const float* bias, const float* b,
                     float s, float* y, const float* u, int threads) {
  const int64_t kb = std::max<int64_t>(32, kSliceFloats / std::max<int64_t>(d.n, 1) / 32 * 32);
  ParallelFor(d.m, threads, RowGrain(d.m, threads, kManyRowsPerThread), [&](Range rows, int64_t) {
    Workspace slice(std::min(kb, d.k) * d.n);
    float* y_c = y + rows.begin * d.n;
    float beta = 0.0f;
    if (b != nullptr) {
      Sgemm(false, true, rows.size(), d.n, d.r, s, u + rows.begin * d.r, d.r, b, d.r, 0.0f, y_c, d.n);
      beta = 1.0f;
    }
    if (bias != nullptr) {
      for (int64_t i = 0; i < rows.size(); ++i) {
        float* y_row = y_c + i * d.n;
        for (int64_t j = 0; j < d.n; ++j) y_row[j] = (beta == 0.0f ? 0.0f : y_row[j]) + bias[j];
      }
      beta = 1.0f;
    }
    for (int64_t k0 = 0; k0 < d.k; k0 += kb) {
      const int64_t cols = std::min(kb, d.k - k0);
      DequantizeTile(q, 0, d.n, k0, cols, slice.data(), cols);
      Sgemm(false, true, rows.size(), d.n, cols, 1.0f, x + rows.begin * d.k + k0, d.k, slice.data(), cols, beta,
            y_c, d.n);
      beta = 1.0f;
    }
  });
}

// dx[rows] = s (g A) * mask, then += sum over n-slices dy[rows, slice] W[slice, :].
void BackwardInputManyRows(const QuantDims& d, const QuantWeight& q, const float* dy, const float* a,
                           const float* g, const MaskSource& mask, float s, float* dx, int threads) {
  const int64_t nb = std::max<int64_t>(4, kSliceFloats / std::max<int64_t>(d.k, 1) / 4 * 4);
  ParallelFor(d.m, threads, RowGrain(d.m, threads, kManyRowsPerThread), [&](Range rows, int64_t) {
    Workspace slice(std::min(nb, d.n) * d.k);
    float* dx_c = dx + rows.begin * d.k;
    float beta = 0.0f;
    if (a != nullptr) {
      Sgemm(false, false, rows.size(), d.k, d.r, s, g + rows.begin * d.r, d.r, a, d.k, 0.0f, dx_c, d.k);
      if (mask.active()) mask.Apply(rows.begin, rows.size(), 0, d.k, dx_c, d.k, dx_c, d.k);
      beta = 1.0f;
    }
    for (int64_t n0 = 0; n0 < d.n; n0 += nb) {
      const int64_t rows_w = std::min(nb, d.n - n0);
      DequantizeTile(q, n0, rows_w, 0, d.k, slice.data(), d.k);
      Sgemm(false, false, rows.size(), d.k, rows_w, 1.0f, dy + rows.begin * d.n + n0, d.n, slice.data(), d.k, beta,
            dx_c, d.k);
      beta = 1.0f;
    }
  });
}

void ForwardF32(const QuantDims& d, const QuantWeight& q, const float* x, const float* bias, const float* a,
                const float* b, const MaskSource& mask, float s, float* y, float* u) {
  QuantWorkspace().Reset();
  if (d.m == 0) return;
  if (a != nullptr) {
    LowRankInput(d, x, a, mask, u);
  } else {
    std::fill(u, u + d.m, 0.0f);  // [M, 1], never read
  }
  const int threads = ThreadsFor(d.m * d.n * (d.k + d.r) + d.n * d.k);
  if (ManyRows(d.m, threads)) {
    ForwardManyRows(d, q, x, bias, a != nullptr ? b : nullptr, s, y, u, threads);
    return;
  }
  const int64_t nb = PanelRows(d.m, d.k);
  ParallelUnits(d.n, nb, threads, [&](int64_t n0, int64_t n1) {
    Workspace panel(std::min(nb, n1 - n0) * d.k);
    for (int64_t p0 = n0; p0 < n1; p0 += nb) {
      const int64_t rows = std::min(nb, n1 - p0);
      // y[:, p0:p0+rows] = s u B[p0:]^T + bias, then += x W[p0:]^T
      float beta = 0.0f;
      if (a != nullptr) {
        Sgemm(false, true, d.m, rows, d.r, s, u, d.r, b + p0 * d.r, d.r, 0.0f, y + p0, d.n);
        beta = 1.0f;
      }
      if (bias != nullptr) {
        for (int64_t i = 0; i < d.m; ++i) {
          float* y_row = y + i * d.n + p0;
          if (beta == 0.0f) {
            std::memcpy(y_row, bias + p0, sizeof(float) * rows);
          } else {
            for (int64_t j = 0; j < rows; ++j) y_row[j] += bias[p0 + j];
          }
        }
        beta = 1.0f;
      }
      DequantizeTile(q, p0, rows, 0, d.k, panel.data(), d.k);
      Sgemm(false, true, d.m, rows, d.k, 1.0f, x, d.k, panel.data(), d.k, beta, y + p0, d.n);
    }
  });
}

// dx = dy deq(W) + s (g A) * mask   [M, K]
void BackwardInputF32(const QuantDims& d, const QuantWeight& q, const float* dy, const float* a, const float* g,
                      const MaskSource& mask, float s, float* dx) {
  QuantWorkspace().Reset();
  if (d.m == 0) return;
  const int threads = ThreadsFor(d.m * d.k * (d.n + d.r) + d.n * d.k);
  if (ManyRows(d.m, threads)) {
    BackwardInputManyRows(d, q, dy, a, g, mask, s, dx, threads);
    return;
  }
  const int64_t kb = BlockCols(d.m, d.n);
  ParallelUnits(d.k, kb, threads, [&](int64_t k0, int64_t k1) {
    Workspace block(std::min(kb, k1 - k0) * d.n);
    for (int64_t c0 = k0; c0 < k1; c0 += kb) {
      const int64_t cols = std::min(kb, k1 - c0);
      float* dx_b = dx + c0;
      float beta = 0.0f;
      if (a != nullptr) {
        Sgemm(false, false, d.m, cols, d.r, s, g, d.r, a + c0, d.k, 0.0f, dx_b, d.k);
        if (mask.active()) mask.Apply(0, d.m, c0, cols, dx_b, d.k, dx_b, d.k);
        beta = 1.0f;
      }
      DequantizeTile(q, 0, d.n, c0, cols, block.data(), cols);
      Sgemm(false, false, d.m, cols, d.n, 1.0f, dy, d.n, block.data(), cols, beta, dx_b, d.k);
    }
  });
}

// The quantised W of a call (codes, scales, offsets, lut at `first`..`first + 3`), checked against
// K = `k`; "" when it follows the contract.
std::string ReadQuantWeight(const AotArgs& args, int first, int64_t k, int64_t group, int64_t bits,
                            bool has_offsets, QuantWeight* q) {
  const int codes = first, scales = first + 1, offsets = first + 2, lut = first + 3;
  if (bits != 4 && bits != 5 && bits != 8) return "bits must be 4, 5 or 8";
  if (group < 1 || k % group != 0) return "group_size must be positive and divide K";
  if (bits == 5 && k % 8 != 0) return "K must be a multiple of 8 for bits 5";
  if (args.ndim(codes) != 2 || args.ndim(scales) != 2) return "codes and scales must be 2-D";
  const std::string want = bits == 8 ? "int8" : "uint8";
  if (want != args.dtype_name(codes)) return "codes must be int8 (bits 8) or uint8 (bits 4, 5)";
  const int64_t row_bytes = bits == 8 ? k : bits == 4 ? k / 2 : k / 2 + k / 8;
  if (args.dim(codes, 1) != row_bytes) {
    return "codes must be [N, K] (bits 8), [N, K/2] (bits 4) or [N, K/2 + K/8] (bits 5)";
  }
  q->n = args.dim(codes, 0);
  q->k = k;
  q->group = group;
  q->bits = static_cast<int>(bits);
  if (args.dtype(scales) != DType::kFloat16 || args.dim(scales, 0) != q->n || args.dim(scales, 1) != k / group) {
    return "scales must be float16 [N, K/G]";
  }
  if (has_offsets && (args.dtype(offsets) != DType::kFloat16 || args.numel(offsets) != q->n * (k / group))) {
    return "offsets must be float16 [N, K/G]";
  }
  if (bits != 8 && (args.dtype(lut) != DType::kFloat32 || args.numel(lut) != (int64_t{1} << bits))) {
    return "lut must be float32 [16] (bits 4) or [32] (bits 5)";
  }
  q->codes = static_cast<const uint8_t*>(args.data(codes));
  q->scales = static_cast<const uint16_t*>(args.data(scales));
  q->offsets = has_offsets ? static_cast<const uint16_t*>(args.data(offsets)) : nullptr;
  q->lut = bits != 8 ? static_cast<const float*>(args.data(lut)) : nullptr;
  return "";
}

// An optional floating input of the dtype of `like` with `numel` elements (when enabled).
bool OptionalOk(const AotArgs& args, int i, bool enabled, int like, int64_t numel) {
  return !enabled || (args.numel(i) == numel && args.dtype(i) == args.dtype(like));
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace ql = mindpet::contracts::quant_lora_linear;

namespace {
std::string RunQuantLoraLinearForward(const AotArgs& args) {
  using mindpet::cpu::OptionalOk;
  const int y_idx = ql::kFwdNumInputs + ql::kFwdY;
  const int u_idx = ql::kFwdNumInputs + ql::kFwdU;
  if (args.ndim(ql::kFwdX) != 2) return "x must be 2-D";
  const bool has_bias = args.scalar(ql::kFwdHasBias) != 0.0;
  const bool has_lora = args.scalar(ql::kFwdHasLora) != 0.0;
  const int mask_mode = static_cast<int>(args.scalar(ql::kFwdHasMask));
  const float s = static_cast<float>(args.scalar(ql::kFwdScale));
  mindpet::cpu::QuantWeight q;
  const std::string bad_w = mindpet::cpu::ReadQuantWeight(
      args, ql::kFwdCodes, args.dim(ql::kFwdX, 1), static_cast<int64_t>(args.scalar(ql::kFwdGroupSize)),
      static_cast<int64_t>(args.scalar(ql::kFwdBits)), args.scalar(ql::kFwdHasOffsets) != 0.0, &q);
  if (!bad_w.empty()) return bad_w;
  const mindpet::cpu::QuantDims d{args.dim(ql::kFwdX, 0), q.k, q.n, has_lora ? args.dim(ql::kFwdLoraA, 0) : 1};
  if (!mindpet::cpu::SameFloatDType(args, {ql::kFwdX, y_idx, u_idx})) {
    return "x and the outputs must share dtype float32 or float16";
  }
  if (args.numel(y_idx) != d.m * d.n || args.numel(u_idx) != d.m * d.r) return "outputs must be y [M,N], u [M,R]";
  if (!OptionalOk(args, ql::kFwdBias, has_bias, ql::kFwdX, d.n)) return "bias must be [N] with the dtype of x";
  if (has_lora && (args.ndim(ql::kFwdLoraA) != 2 || args.ndim(ql::kFwdLoraB) != 2 ||
                   !OptionalOk(args, ql::kFwdLoraA, true, ql::kFwdX, d.r * d.k) ||
                   args.dim(ql::kFwdLoraB, 0) != d.n || !OptionalOk(args, ql::kFwdLoraB, true, ql::kFwdX, d.n * d.r))) {
    return "lora_a must be [R,K] and lora_b [N,R] with the dtype of x";
  }
  const std::string bad_mask =
      mindpet::cpu::lora_mask::Check(args, ql::kFwdMask, mask_mode, args.dtype(ql::kFwdX), d.m, d.k);
  if (!bad_mask.empty()) return bad_mask;
  const std::string no_blas = mindpet::cpu::RequireBlas();
  if (!no_blas.empty()) return no_blas;

  const FloatIn x(args, ql::kFwdX), bias(args, ql::kFwdBias, has_bias), a(args, ql::kFwdLoraA, has_lora),
      b(args, ql::kFwdLoraB, has_lora);
  const mindpet::cpu::MaskSource mask(args, ql::kFwdMask, mask_mode, args.dtype(ql::kFwdX), d.k);
  FloatOut y(args, y_idx), u(args, u_idx);
  mindpet::cpu::ForwardF32(d, q, x.get(), bias.get(), a.get(), b.get(), mask, s, y.get(), u.get());
  mindpet::cpu::CommitAll({&y, &u});
  return {};
}

std::string RunQuantLoraLinearBackwardInput(const AotArgs& args) {
  using mindpet::cpu::OptionalOk;
  const int dx_idx = ql::kBwdXNumInputs + ql::kBwdXDx;
  if (args.ndim(ql::kBwdXDy) != 2 || args.ndim(ql::kBwdXX) != 2) return "dy and x_cols must be 2-D";
  const bool has_lora = args.scalar(ql::kBwdXHasLora) != 0.0;
  const int mask_mode = static_cast<int>(args.scalar(ql::kBwdXHasMask));
  const float s = static_cast<float>(args.scalar(ql::kBwdXScale));
  mindpet::cpu::QuantWeight q;
  const std::string bad_w = mindpet::cpu::ReadQuantWeight(
      args, ql::kBwdXCodes, args.dim(ql::kBwdXX, 1), static_cast<int64_t>(args.scalar(ql::kBwdXGroupSize)),
      static_cast<int64_t>(args.scalar(ql::kBwdXBits)), args.scalar(ql::kBwdXHasOffsets) != 0.0, &q);
  if (!bad_w.empty()) return bad_w;
  const mindpet::cpu::QuantDims d{args.dim(ql::kBwdXDy, 0), q.k, q.n, has_lora ? args.dim(ql::kBwdXLoraA, 0) : 1};
  if (args.dim(ql::kBwdXDy, 1) != d.n || args.numel(dx_idx) != d.m * d.k) {
    return "shapes do not follow dy [M,N], x_cols [*,K], dx [M,K]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {ql::kBwdXDy, dx_idx})) return mindpet::cpu::kSameFloatDTypeMessage;
  if (has_lora) {
    if (args.ndim(ql::kBwdXLoraA) != 2 || !OptionalOk(args, ql::kBwdXLoraA, true, ql::kBwdXDy, d.r * d.k)) {
      return "lora_a must be [R,K] with the dtype of dy";
    }
    if (args.dtype(ql::kBwdXG) != mindpet::cpu::DType::kFloat32 || args.numel(ql::kBwdXG) != d.m * d.r) {
      return "g must be float32 [M,R]";
    }
  }
  const std::string bad_mask =
      mindpet::cpu::lora_mask::Check(args, ql::kBwdXMask, mask_mode, args.dtype(ql::kBwdXDy), d.m, d.k);
  if (!bad_mask.empty()) return bad_mask;
  const std::string no_blas = mindpet::cpu::RequireBlas();
  if (!no_blas.empty()) return no_blas;

  const FloatIn dy(args, ql::kBwdXDy), a(args, ql::kBwdXLoraA, has_lora);
  const mindpet::cpu::MaskSource mask(args, ql::kBwdXMask, mask_mode, args.dtype(ql::kBwdXDy), d.k);
  FloatOut dx(args, dx_idx);
  const float* g = has_lora ? static_cast<const float*>(args.data(ql::kBwdXG)) : nullptr;
  mindpet::cpu::BackwardInputF32(d, q, dy.get(), a.get(), g, mask, s, dx.get());
  mindpet::cpu::CommitAll({&dx});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(QuantLoraLinearForward, ql::kFwdNumInputs + ql::kFwdNumOutputs, RunQuantLoraLinearForward)
MINDPET_AOT_ENTRY(QuantLoraLinearBackwardInput, ql::kBwdXNumInputs + ql::kBwdXNumOutputs,
                  RunQuantLoraLinearBackwardInput)
