// attention (the attention core) on CPU (contract: ops/CONTRACTS.md section 9), per batch b and query head h,
// in the projections' own row layout (q [B*L, NH*D], k/v [B*L, NKV*D]; head h's columns h*D..h*D+D-1):
//   forward : qr = rot(q_bh), kr = rot(k_bg) (g = h / (NH/NKV); rot(x) = x cos + rotate_half(x) sin, or x);
//             s = scale qr kr^T (+ causal mask); lse = logsumexp_j s; p = exp(s - lse); out_bh = p v_bg
//   backward: p recomputed from qr, kr and lse; delta_i = sum_d dout_i * out_i;
//             dv_bg += p^T dout; dp = dout v^T; ds = p (dp - delta); dqr = scale ds kr; dkr_bg += scale ds^T qr;
//             dq = dqr cos + rotate_half^T(dqr sin), rotate_half^T(y) = [y2, -y1] (the same for dk)
// Flash-attention style: [L, L] is never stored. A (b, h) unit runs over blocks of kRowBlock query rows, with a
// [kRowBlock, L] score block (causal: only the columns up to the block's last row) as per-thread workspace.
// Units are split across the threads (parallel.h); each GQA group's dk/dv are summed in head order from
// per-head partials, so results do not depend on thread timing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "aot_args.h"
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
    std::vector<float> scores(static_cast<size_t>(std::min(kRowBlock, s.l) * s.l));
    for (int64_t unit = range.begin; unit < range.end; ++unit) {
      const int64_t b = unit / s.nh, h = unit % s.nh, g = h / s.groups();
      const int64_t row0 = b * s.l;
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
          float* row = sc + i * cols;
          const int64_t valid = RowCols(s, r0 + i);
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, row[j]);
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < valid; ++j) {
            const float e = fast::ExpF(row[j] - mx);
            row[j] = e;
            sum += e;
          }
          const float inv = 1.0f / sum;
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) row[j] *= inv;
          std::fill(row + valid, row + cols, 0.0f);
          lse_bh[r0 + i] = mx + std::log(sum);
        }
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
    for (int64_t unit = range.begin; unit < range.end; ++unit) {
      const int64_t b = unit / s.nh, h = unit % s.nh, g = h / s.groups();
      const int64_t row0 = b * s.l;
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
          float* row = pb + i * cols;
          const int64_t valid = RowCols(s, r0 + i);
          const float m = lse_bh[r0 + i];
#pragma omp simd
          for (int64_t j = 0; j < valid; ++j) row[j] = fast::ExpF(row[j] - m);
          std::fill(row + valid, row + cols, 0.0f);
        }
        // dv += p^T dout ; dp = dout v^T
        Sgemm(true, false, cols, s.d, rows, 1.0f, pb, cols, dout_blk, s.q_ld(), 1.0f, dv_h, s.d);
        Sgemm(false, true, rows, cols, s.d, 1.0f, dout_blk, s.q_ld(), v_bg, s.kv_ld(), 0.0f, dpb, cols);
        // ds = p (dp - delta), into dp
        for (int64_t i = 0; i < rows; ++i) {
          const float di = delta[r0 + i];
          const float* prow = pb + i * cols;
          float* row = dpb + i * cols;
#pragma omp simd
          for (int64_t j = 0; j < cols; ++j) row[j] = prow[j] * (row[j] - di);
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

std::string RunAttentionForward(const AotArgs& args) {
  const int o = at::kFwdNumInputs;
  mindpet::cpu::AttnDims s{};
  std::string bad = ReadDims(args, at::kFwdQ, at::kFwdK, at::kFwdV, at::kFwdCos, at::kFwdSin, at::kFwdNumHeads, &s);
  if (!bad.empty()) return bad;
  if (args.numel(o + at::kFwdOut) != s.b * s.l * s.nh * s.d || args.numel(o + at::kFwdLse) != s.b * s.nh * s.l) {
    return "out must be [B*L, num_heads*D] and lse [B, num_heads, L]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {at::kFwdQ, at::kFwdK, at::kFwdV, at::kFwdCos, at::kFwdSin, o + at::kFwdOut})) {
    return "q, k, v, cos, sin and out must share dtype float32 or float16";
  }
  if (args.dtype(o + at::kFwdLse) != DType::kFloat32) return "lse must be float32";
  bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn q(args, at::kFwdQ), k(args, at::kFwdK), v(args, at::kFwdV), cos(args, at::kFwdCos, s.rotary),
      sin(args, at::kFwdSin, s.rotary);
  FloatOut out(args, o + at::kFwdOut);
  mindpet::cpu::ForwardF32(s, q.get(), k.get(), v.get(), cos.get(), sin.get(), out.get(),
                           static_cast<float*>(args.data(o + at::kFwdLse)));
  out.Commit();
  return {};
}

std::string RunAttentionBackward(const AotArgs& args) {
  const int o = at::kBwdNumInputs;
  mindpet::cpu::AttnDims s{};
  std::string bad = ReadDims(args, at::kBwdQ, at::kBwdK, at::kBwdV, at::kBwdCos, at::kBwdSin, at::kBwdNumHeads, &s);
  if (!bad.empty()) return bad;
  const int64_t q_size = s.b * s.l * s.nh * s.d, kv_size = s.b * s.l * s.nkv * s.d;
  if (args.numel(at::kBwdDout) != q_size || args.numel(at::kBwdOut) != q_size ||
      args.numel(at::kBwdLse) != s.b * s.nh * s.l || args.numel(o + at::kBwdDq) != q_size ||
      args.numel(o + at::kBwdDk) != kv_size || args.numel(o + at::kBwdDv) != kv_size) {
    return "dout and out must be [B*L, num_heads*D], lse [B, num_heads, L], dk and dv [B*L, num_kv_heads*D]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {at::kBwdDout, at::kBwdQ, at::kBwdK, at::kBwdV, at::kBwdCos, at::kBwdSin,
                                           at::kBwdOut, o + at::kBwdDq, o + at::kBwdDk, o + at::kBwdDv})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  if (args.dtype(at::kBwdLse) != DType::kFloat32) return "lse must be float32";
  bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn dout(args, at::kBwdDout), q(args, at::kBwdQ), k(args, at::kBwdK), v(args, at::kBwdV),
      cos(args, at::kBwdCos, s.rotary), sin(args, at::kBwdSin, s.rotary), out(args, at::kBwdOut);
  FloatOut dq(args, o + at::kBwdDq), dk(args, o + at::kBwdDk), dv(args, o + at::kBwdDv);
  mindpet::cpu::BackwardF32(s, dout.get(), q.get(), k.get(), v.get(), cos.get(), sin.get(), out.get(),
                            static_cast<const float*>(args.data(at::kBwdLse)), dq.get(), dk.get(), dv.get());
  mindpet::cpu::CommitAll({&dq, &dk, &dv});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(AttentionForward, at::kFwdNumInputs + at::kFwdNumOutputs, RunAttentionForward)
MINDPET_AOT_ENTRY(AttentionBackward, at::kBwdNumInputs + at::kBwdNumOutputs, RunAttentionBackward)
