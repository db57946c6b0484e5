// attention (the attention core) on CPU (contract: ops/CONTRACTS.md section 9), per batch b and query head h,
// in the projections' own row layout (q [B*L, NH*D], k/v [B*L, NKV*D]; head h's columns h*D..h*D+D-1):
//   forward : qr = rot(q_bh), kr = rot(k_bg) (g = h / (NH/NKV); rot(x) = x cos + rotate_half(x) sin, or x);
//             s = scale qr kr^T (+ causal mask); lse = logsumexp_j s; p = exp(s - lse); out_bh = p v_bg
//   backward: p recomputed from qr, kr and lse; delta_i = sum_d dout_i * out_i;
//             dv_bg += p^T dout; dp = dout v^T; ds = p (dp - delta); dqr = scale ds kr; dkr_bg += scale ds^T qr;
//             dq = dqr cos + rotate_half^T(dqr sin), rotate_half^T(y) = [y2, -y1] (the same for dk)
// attention_masked (section 9b) adds a key-padding mask (masked keys get probability 0; a row without a visible
// key gives out = 0, lse = -inf) and dropout on p regenerated from a seed (attention_dropout.h):
//   out_bh = pd v_bg, pd = p keep / (1 - p_drop); backward ds = pd (dout v^T) - p delta, dv_bg += pd^T dout.
// Flash-attention style: [L, L] is never stored. A (b, h) unit runs over blocks of kRowBlock query rows, with a
// [kRowBlock, L] score block (causal: only the columns up to the block's last row) as per-thread workspace.
// Units are split across the threads (parallel.h); each GQA group's dk/dv are summed in head order from
// per-head partials, so results do not depend on thread timing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "aot_args.h"
#include "attention_dropout.h"
#include "blas.h"
#include "export.h"
#include "fast_math.h"
#include "float_views.h"
#include "mindpet/contracts.h"
#include "parallel.h"

namespace mindpet {
namespace cpu {
namespace {

struct AttnDims {
  int64_t b, l, nh, nkv, d;
  float scale;
  bool causal, rotary;
  const int32_t* key_mask = nullptr;  // [B, L], 0 = masked key (attention_masked), or null
  float dropout = 0.0f;               // attention_masked: dropout probability of p
  uint64_t seed = 0;
  int64_t groups() const { return nh / nkv; }
  int64_t q_ld() const { return nh * d; }
  int64_t kv_ld() const { return nkv * d; }
};

// Query rows per block: the score block is kRowBlock x L floats (64 KiB at L = 256).
constexpr int64_t kRowBlock = 64;

// dst[L, D] (contiguous) = rot(src rows of stride ld): x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1].
void GatherRotated(const AttnDims& s, const float* src, int64_t ld, const float* cos, const float* sin, float* dst) {
  const int64_t half = s.d / 2;
  for (int64_t i = 0; i < s.l; ++i) {
    const float* x = src + i * ld;
    float* y = dst + i * s.d;
    if (!s.rotary) {
      std::copy(x, x + s.d, y);
      continue;
    }
    const float* c = cos + i * s.d;
    const float* sn = sin + i * s.d;
#pragma omp simd
    for (int64_t j = 0; j < half; ++j) y[j] = x[j] * c[j] - x[j + half] * sn[j];
#pragma omp simd
    for (int64_t j = half; j < s.d; ++j) y[j] = x[j] * c[j] + x[j - half] * sn[j];
  }
}

// dst rows (stride ld) = rot^T(g [L, D]): g cos + rotate_half^T(g sin), rotate_half^T(y) = [y2, -y1].
void ScatterUnrotated(const AttnDims& s, const float* g, const float* cos, const float* sin, float* dst, int64_t ld) {
  const int64_t half = s.d / 2;
  for (int64_t i = 0; i < s.l; ++i) {
    const float* x = g + i * s.d;
    float* y = dst + i * ld;
    if (!s.rotary) {
      std::copy(x, x + s.d, y);
      continue;
    }
    const float* c = cos + i * s.d;
    const float* sn = sin + i * s.d;
#pragma omp simd
    for (int64_t j = 0; j < half; ++j) y[j] = x[j] * c[j] + x[j + half] * sn[j + half];
#pragma omp simd
    for (int64_t j = half; j < s.d; ++j) y[j] = x[j] * c[j] - x[j - half] * sn[j - half];
  }
}

// Columns of the score block of query rows [r0, r1): causal -> [0, r1), else [0, L).
inline int64_t BlockCols(const AttnDims& s, int64_t r1) { return s.causal ? r1 : s.l; }

// Valid columns of query row i: causal -> [0, i], else [0, L).
inline int64_t RowCols(const AttnDims& s, int64_t i) { return s.causal ? i + 1 : s.l; }

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// keep[j] = 1 where key j of batch row b is visible, else 0; null without a key mask.
const float* KeepRow(const AttnDims& s, int64_t b, std::vector<float>* keep) {
  if (s.key_mask == nullptr) return nullptr;
  const int32_t* m = s.key_mask + b * s.l;
  for (int64_t j = 0; j < s.l; ++j) (*keep)[j] = m[j] != 0 ? 1.0f : 0.0f;
  return keep->data();
}

// In place: softmax of the score row over [0, valid) (keys with keep[j] == 0 excluded when keep is given),
// zeros in [valid, cols). Returns the log-sum-exp; -inf, and a zero row, when no key is visible.
float SoftmaxRow(float* row, int64_t valid, int64_t cols, const float* keep) {
  float mx = kNegInf;
  if (keep == nullptr) {
    for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, row[j]);
  } else {
    for (int64_t j = 0; j < valid; ++j) mx = keep[j] != 0.0f ? std::max(mx, row[j]) : mx;
  }
  if (mx == kNegInf) {
    std::fill(row, row + cols, 0.0f);
    return kNegInf;
  }
  float sum = 0.0f;
  if (keep == nullptr) {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < valid; ++j) {
      const float e = fast::ExpF(row[j] - mx);
      row[j] = e;
      sum += e;
    }
  } else {  // masked keys: ExpF saturates (finite), times 0
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < valid; ++j) {
      const float e = fast::ExpF(row[j] - mx) * keep[j];
      row[j] = e;
      sum += e;
    }
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < valid; ++j) row[j] *= inv;
  std::fill(row + valid, row + cols, 0.0f);
  return mx + std::log(sum);
}

// In place: p = exp(s - lse) over [0, valid) (0 for masked keys and for a row with lse = -inf), 0 after.
void RecomputeRow(float* row, int64_t valid, int64_t cols, float lse, const float* keep) {
  if (lse == kNegInf) {
    std::fill(row, row + cols, 0.0f);
    return;
  }
  if (keep == nullptr) {
#pragma omp simd
    for (int64_t j = 0; j < valid; ++j) row[j] = fast::ExpF(row[j] - lse);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < valid; ++j) row[j] = fast::ExpF(row[j] - lse) * keep[j];
  }
  std::fill(row + valid, row + cols, 0.0f);
}

// Dropout of probability rows [r0, r0 + rows) of unit (b, h) in a block of `cols` columns.
void DropRows(const AttnDims& s, int64_t unit, int64_t r0, int64_t rows, int64_t cols, float* block) {
  const uint32_t threshold = dropout_bits::Threshold(s.dropout);
  const float keep_scale = 1.0f / (1.0f - s.dropout);
  for (int64_t i = 0; i < rows; ++i) {
    const uint64_t key = dropout_bits::RowKey(s.seed, unit * s.l + r0 + i);
    dropout_bits::ApplyRow(key, threshold, keep_scale, block + i * cols, RowCols(s, r0 + i));
  }
}

int AttentionThreads(const AttnDims& s) {
  const int64_t units = s.b * s.nh;
  const int max = ThreadsFor(units * s.l * s.l * s.d * 2);
  return static_cast<int>(std::min<int64_t>(units, max));
}

void ForwardF32(const AttnDims& s, const float* q, const float* k, const float* v, const float* cos,
                const float* sin, float* out, float* lse) {
  const int64_t units = s.b * s.nh;
  if (units == 0 || s.l == 0) return;
  const int threads = AttentionThreads(s);
  ParallelFor(units, threads, 1, [&](Range range, int64_t) {
    std::vector<float> qr(static_cast<size_t>(s.l * s.d)), kr(qr.size());
    std::vector<float> scores(static_cast<size_t>(std::min(kRowBlock, s.l) * s.l)), keep_row(s.l);
    for (int64_t unit = range.begin; unit < range.end; ++unit) {
      const int64_t b = unit / s.nh, h = unit % s.nh, g = h / s.groups();
      const int64_t row0 = b * s.l;
      const float* keep = KeepRow(s, b, &keep_row);
      GatherRotated(s, q + row0 * s.q_ld() + h * s.d, s.q_ld(), cos, sin, qr.data());
      GatherRotated(s, k + row0 * s.kv_ld() + g * s.d, s.kv_ld(), cos, sin, kr.data());
      const float* v_bg = v + row0 * s.kv_ld() + g * s.d;
      float* out_bh = out + row0 * s.q_ld() + h * s.d;
      float* lse_bh = lse + unit * s.l;
      for (int64_t r0 = 0; r0 < s.l; r0 += kRowBlock) {
        const int64_t r1 = std::min(r0 + kRowBlock, s.l);
        const int64_t rows = r1 - r0, cols = BlockCols(s, r1);
        float* sc = scores.data();
        Sgemm(false, true, rows, cols, s.d, s.scale, qr.data() + r0 * s.d, s.d, kr.data(), s.d, 0.0f, sc, cols);
        for (int64_t i = 0; i < rows; ++i) {
          lse_bh[r0 + i] = SoftmaxRow(sc + i * cols, RowCols(s, r0 + i), cols, keep);
        }
        if (s.dropout > 0.0f) DropRows(s, unit, r0, rows, cols, sc);
        Sgemm(false, false, rows, s.d, cols, 1.0f, sc, cols, v_bg, s.kv_ld(), 0.0f, out_bh + r0 * s.q_ld(), s.q_ld());
      }
    }
  });
}

void BackwardF32(const AttnDims& s, const float* dout, const float* q, const float* k, const float* v,
                 const float* cos, const float* sin, const float* out, const float* lse, float* dq, float* dk,
                 float* dv) {
  const int64_t units = s.b * s.nh;
  if (units == 0 || s.l == 0) return;
  const int threads = AttentionThreads(s);
  const int64_t head_size = s.l * s.d;
  // per (b, h): the contributions of query head h to dk and dv of its kv head (rotated coordinates for dk)
  std::vector<float> dk_parts(static_cast<size_t>(units * head_size)), dv_parts(dk_parts.size());
  ParallelFor(units, threads, 1, [&](Range range, int64_t) {
    const int64_t block = std::min(kRowBlock, s.l);
    std::vector<float> qr(static_cast<size_t>(head_size)), kr(qr.size()), dqr(qr.size());
    std::vector<float> p(static_cast<size_t>(block * s.l)), dp(p.size()), delta(static_cast<size_t>(s.l));
    std::vector<float> pd(s.dropout > 0.0f ? p.size() : 0), keep_row(s.l);
    for (int64_t unit = range.begin; unit < range.end; ++unit) {
      const int64_t b = unit / s.nh, h = unit % s.nh, g = h / s.groups();
      const int64_t row0 = b * s.l;
      const float* keep = KeepRow(s, b, &keep_row);
      GatherRotated(s, q + row0 * s.q_ld() + h * s.d, s.q_ld(), cos, sin, qr.data());
      GatherRotated(s, k + row0 * s.kv_ld() + g * s.d, s.kv_ld(), cos, sin, kr.data());
      const float* v_bg = v + row0 * s.kv_ld() + g * s.d;
      const float* dout_bh = dout + row0 * s.q_ld() + h * s.d;
      const float* out_bh = out + row0 * s.q_ld() + h * s.d;
      const float* lse_bh = lse + unit * s.l;
      float* dk_h = dk_parts.data() + unit * head_size;
      float* dv_h = dv_parts.data() + unit * head_size;
      std::fill(dk_h, dk_h + head_size, 0.0f);
      std::fill(dv_h, dv_h + head_size, 0.0f);
      for (int64_t i = 0; i < s.l; ++i) {
        const float* a = dout_bh + i * s.q_ld();
        const float* o = out_bh + i * s.q_ld();
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < s.d; ++j) acc += a[j] * o[j];
        delta[i] = acc;
      }
      for (int64_t r0 = 0; r0 < s.l; r0 += kRowBlock) {
        const int64_t r1 = std::min(r0 + kRowBlock, s.l);
        const int64_t rows = r1 - r0, cols = BlockCols(s, r1);
        float* pb = p.data();
        float* dpb = dp.data();
        const float* qr_blk = qr.data() + r0 * s.d;
        const float* dout_blk = dout_bh + r0 * s.q_ld();
        // p = exp(scale qr kr^T - lse), zero where masked
        Sgemm(false, true, rows, cols, s.d, s.scale, qr_blk, s.d, kr.data(), s.d, 0.0f, pb, cols);
        for (int64_t i = 0; i < rows; ++i) {
          RecomputeRow(pb + i * cols, RowCols(s, r0 + i), cols, lse_bh[r0 + i], keep);
        }
        // pd = dropout(p) (the probabilities out was computed with)
        const float* pdb = pb;
        if (s.dropout > 0.0f) {
          std::copy(pb, pb + rows * cols, pd.data());
          DropRows(s, unit, r0, rows, cols, pd.data());
          pdb = pd.data();
        }
        // dv += pd^T dout ; dp = dout v^T (the gradient of pd)
        Sgemm(true, false, cols, s.d, rows, 1.0f, pdb, cols, dout_blk, s.q_ld(), 1.0f, dv_h, s.d);
        Sgemm(false, true, rows, cols, s.d, 1.0f, dout_blk, s.q_ld(), v_bg, s.kv_ld(), 0.0f, dpb, cols);
        // ds = p (dp - delta) without dropout, pd dp - p delta with it; into dp
        for (int64_t i = 0; i < rows; ++i) {
          const float di = delta[r0 + i];
          const float* prow = pb + i * cols;
          float* row = dpb + i * cols;
          if (pdb == pb) {
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) row[j] = prow[j] * (row[j] - di);
          } else {
            const float* pdrow = pdb + i * cols;
#pragma omp simd
            for (int64_t j = 0; j < cols; ++j) row[j] = pdrow[j] * row[j] - prow[j] * di;
          }
        }
        // dqr = scale ds kr ; dkr += scale ds^T qr
        Sgemm(false, false, rows, s.d, cols, s.scale, dpb, cols, kr.data(), s.d, 0.0f, dqr.data() + r0 * s.d, s.d);
        Sgemm(true, false, cols, s.d, rows, s.scale, dpb, cols, qr_blk, s.d, 1.0f, dk_h, s.d);
      }
      ScatterUnrotated(s, dqr.data(), cos, sin, dq + row0 * s.q_ld() + h * s.d, s.q_ld());
    }
  });
  // dk, dv of (b, g) = sum over the group's query heads in head order; dk back through the rotary.
  const int64_t kv_units = s.b * s.nkv;
  ParallelFor(kv_units, std::min<int64_t>(threads, kv_units), 1, [&](Range range, int64_t) {
    std::vector<float> acc(static_cast<size_t>(head_size));
    for (int64_t unit = range.begin; unit < range.end; ++unit) {
      const int64_t b = unit / s.nkv, g = unit % s.nkv;
      const int64_t first = b * s.nh + g * s.groups();
      for (int pass = 0; pass < 2; ++pass) {
        const std::vector<float>& parts = pass == 0 ? dk_parts : dv_parts;
        std::copy(parts.begin() + first * head_size, parts.begin() + (first + 1) * head_size, acc.begin());
        for (int64_t h = 1; h < s.groups(); ++h) {
          const float* part = parts.data() + (first + h) * head_size;
#pragma omp simd
          for (int64_t j = 0; j < head_size; ++j) acc[j] += part[j];
        }
        float* dst = (pass == 0 ? dk : dv) + b * s.l * s.kv_ld() + g * s.d;
        if (pass == 0) {
          ScatterUnrotated(s, acc.data(), cos, sin, dst, s.kv_ld());
        } else {
          AttnDims plain = s;
          plain.rotary = false;
          ScatterUnrotated(plain, acc.data(), cos, sin, dst, s.kv_ld());
        }
      }
    }
  });
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::DType;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace at = mindpet::contracts::attention;
namespace am = mindpet::contracts::attention_masked;

namespace {

// Dims from q [B*L, NH*D], k and v [B*L, NKV*D], cos and sin [L, D] and the attributes; "" when consistent.
std::string ReadDims(const AotArgs& args, int q, int k, int v, int cos, int sin, int attr0,
                     mindpet::cpu::AttnDims* s) {
  const int64_t nh = static_cast<int64_t>(args.scalar(attr0 + 0));
  const int64_t nkv = static_cast<int64_t>(args.scalar(attr0 + 1));
  s->scale = static_cast<float>(args.scalar(attr0 + 2));
  s->causal = args.scalar(attr0 + 3) != 0.0;
  s->rotary = args.scalar(attr0 + 4) != 0.0;
  if (args.ndim(q) != 2 || args.ndim(k) != 2 || args.ndim(v) != 2 || args.ndim(cos) != 2 || args.ndim(sin) != 2) {
    return "q, k, v, cos and sin must be 2-D";
  }
  s->l = args.dim(cos, 0);
  s->d = args.dim(cos, 1);
  if (nh < 1 || nkv < 1 || nh % nkv != 0) return "num_heads must be a positive multiple of num_kv_heads";
  if (s->l < 1 || s->d < 2 || s->d % 2 != 0) return "cos must be [L, D] with L >= 1 and an even D";
  if (args.dim(sin, 0) != s->l || args.dim(sin, 1) != s->d) return "sin must have the shape of cos";
  const int64_t m = args.dim(q, 0);
  if (m % s->l != 0 || args.dim(q, 1) != nh * s->d) return "q must be [B*L, num_heads*D]";
  if (args.dim(k, 0) != m || args.dim(k, 1) != nkv * s->d || args.dim(v, 0) != m || args.dim(v, 1) != nkv * s->d) {
    return "k and v must be [B*L, num_kv_heads*D]";
  }
  s->b = m / s->l;
  s->nh = nh;
  s->nkv = nkv;
  return {};
}

// Argument positions of one forward / backward entry point (section 9, or 9b with mask and seed; -1: absent).
struct FwdArgs {
  int q, k, v, cos, sin, mask, seed, attr0, num_inputs, out, lse;
};
struct BwdArgs {
  int dout, q, k, v, cos, sin, mask, seed, out, lse, attr0, num_inputs, dq, dk, dv;
};

constexpr FwdArgs kPlainFwd{at::kFwdQ, at::kFwdK, at::kFwdV, at::kFwdCos, at::kFwdSin, -1, -1, at::kFwdNumHeads,
                            at::kFwdNumInputs, at::kFwdOut, at::kFwdLse};
constexpr BwdArgs kPlainBwd{at::kBwdDout, at::kBwdQ, at::kBwdK, at::kBwdV, at::kBwdCos, at::kBwdSin, -1, -1,
                            at::kBwdOut, at::kBwdLse, at::kBwdNumHeads, at::kBwdNumInputs, at::kBwdDq,
                            at::kBwdDk, at::kBwdDv};
constexpr FwdArgs kMaskedFwd{am::kFwdQ, am::kFwdK, am::kFwdV, am::kFwdCos, am::kFwdSin, am::kFwdKeyMask,
                             am::kFwdSeed, am::kFwdNumHeads, am::kFwdNumInputs, am::kFwdOut, am::kFwdLse};
constexpr BwdArgs kMaskedBwd{am::kBwdDout, am::kBwdQ, am::kBwdK, am::kBwdV, am::kBwdCos, am::kBwdSin,
                             am::kBwdKeyMask, am::kBwdSeed, am::kBwdOut, am::kBwdLse, am::kBwdNumHeads,
                             am::kBwdNumInputs, am::kBwdDq, am::kBwdDk, am::kBwdDv};
static_assert(am::kFwdDropout == am::kFwdNumHeads + 5 && am::kBwdDropout == am::kBwdNumHeads + 5,
              "attention_masked: dropout follows the five attributes of section 9");

// Key mask [B, L] int32, seed [2] int32 and the dropout attribute (attr0 + 5) of section 9b; "" when consistent.
std::string ReadMasking(const AotArgs& args, int mask, int seed, int attr0, mindpet::cpu::AttnDims* s) {
  if (mask < 0) return {};
  if (std::strcmp(args.dtype_name(mask), "int32") != 0 || args.ndim(mask) != 2 || args.dim(mask, 0) != s->b ||
      args.dim(mask, 1) != s->l) {
    return "key_mask must be int32 [B, L]";
  }
  if (std::strcmp(args.dtype_name(seed), "int32") != 0 || args.numel(seed) != 2) return "seed must be int32 [2]";
  const double p = args.scalar(attr0 + 5);
  if (!(p >= 0.0 && p < 1.0)) return "dropout must be in [0, 1)";
  s->key_mask = static_cast<const int32_t*>(args.data(mask));
  s->dropout = static_cast<float>(p);
  const int32_t* words = static_cast<const int32_t*>(args.data(seed));
  s->seed = (static_cast<uint64_t>(static_cast<uint32_t>(words[0])) << 32) | static_cast<uint32_t>(words[1]);
  return {};
}

std::string RunForward(const AotArgs& args, const FwdArgs& a) {
  const int o = a.num_inputs;
  mindpet::cpu::AttnDims s{};
  std::string bad = ReadDims(args, a.q, a.k, a.v, a.cos, a.sin, a.attr0, &s);
  if (bad.empty()) bad = ReadMasking(args, a.mask, a.seed, a.attr0, &s);
  if (!bad.empty()) return bad;
  if (args.numel(o + a.out) != s.b * s.l * s.nh * s.d || args.numel(o + a.lse) != s.b * s.nh * s.l) {
    return "out must be [B*L, num_heads*D] and lse [B, num_heads, L]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {a.q, a.k, a.v, a.cos, a.sin, o + a.out})) {
    return "q, k, v, cos, sin and out must share dtype float32 or float16";
  }
  if (args.dtype(o + a.lse) != DType::kFloat32) return "lse must be float32";
  bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn q(args, a.q), k(args, a.k), v(args, a.v), cos(args, a.cos, s.rotary), sin(args, a.sin, s.rotary);
  FloatOut out(args, o + a.out);
  mindpet::cpu::ForwardF32(s, q.get(), k.get(), v.get(), cos.get(), sin.get(), out.get(),
                           static_cast<float*>(args.data(o + a.lse)));
  out.Commit();
  return {};
}

std::string RunBackward(const AotArgs& args, const BwdArgs& a) {
  const int o = a.num_inputs;
  mindpet::cpu::AttnDims s{};
  std::string bad = ReadDims(args, a.q, a.k, a.v, a.cos, a.sin, a.attr0, &s);
  if (bad.empty()) bad = ReadMasking(args, a.mask, a.seed, a.attr0, &s);
  if (!bad.empty()) return bad;
  const int64_t q_size = s.b * s.l * s.nh * s.d, kv_size = s.b * s.l * s.nkv * s.d;
  if (args.numel(a.dout) != q_size || args.numel(a.out) != q_size || args.numel(a.lse) != s.b * s.nh * s.l ||
      args.numel(o + a.dq) != q_size || args.numel(o + a.dk) != kv_size || args.numel(o + a.dv) != kv_size) {
    return "dout and out must be [B*L, num_heads*D], lse [B, num_heads, L], dk and dv [B*L, num_kv_heads*D]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {a.dout, a.q, a.k, a.v, a.cos, a.sin, a.out, o + a.dq, o + a.dk,
                                           o + a.dv})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  if (args.dtype(a.lse) != DType::kFloat32) return "lse must be float32";
  bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn dout(args, a.dout), q(args, a.q), k(args, a.k), v(args, a.v), cos(args, a.cos, s.rotary),
      sin(args, a.sin, s.rotary), out(args, a.out);
  FloatOut dq(args, o + a.dq), dk(args, o + a.dk), dv(args, o + a.dv);
  mindpet::cpu::BackwardF32(s, dout.get(), q.get(), k.get(), v.get(), cos.get(), sin.get(), out.get(),
                            static_cast<const float*>(args.data(a.lse)), dq.get(), dk.get(), dv.get());
  mindpet::cpu::CommitAll({&dq, &dk, &dv});
  return {};
}

std::string RunAttentionForward(const AotArgs& args) { return RunForward(args, kPlainFwd); }
std::string RunAttentionBackward(const AotArgs& args) { return RunBackward(args, kPlainBwd); }
std::string RunAttentionMaskedForward(const AotArgs& args) { return RunForward(args, kMaskedFwd); }
std::string RunAttentionMaskedBackward(const AotArgs& args) { return RunBackward(args, kMaskedBwd); }
}  // namespace

MINDPET_AOT_ENTRY(AttentionForward, at::kFwdNumInputs + at::kFwdNumOutputs, RunAttentionForward)
MINDPET_AOT_ENTRY(AttentionBackward, at::kBwdNumInputs + at::kBwdNumOutputs, RunAttentionBackward)
MINDPET_AOT_ENTRY(AttentionMaskedForward, am::kFwdNumInputs + am::kFwdNumOutputs, RunAttentionMaskedForward)
MINDPET_AOT_ENTRY(AttentionMaskedBackward, am::kBwdNumInputs + am::kBwdNumOutputs, RunAttentionMaskedBackward)
