// attention core on CPU (contract: ops/CONTRACTS.md section 9), per batch b and query head h (KV head
// g = h / (H / Hk), grouped-query attention):
//   forward : S = scale Q K^T + bias [L, S_k];  lse = log sum exp S (per row);  P = exp(S - lse);  O = P V
//   backward: P recomputed from Q, K, bias and lse;  dV = sum_h P^T dO;  dP = dO V^T;  D = rowsum(dO * O);
//             dS = P (dP - D);  dQ = scale dS K;  dK = scale sum_h dS^T Q
// Nothing [L, S_k] is saved: only lse (float32, per query row). The forward splits (b, h) pairs across
// participants; the backward splits (b, g) pairs (each owns its dK, dV), looping over the g's query heads.
// The score rows are exponentiated with the branch-free ExpF of fast_math.h (vectorised).
#include <algorithm>
#include <cmath>
#include <cstdint>
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
  int64_t b, h, hk, l, s, d;
  int64_t group() const { return h / hk; }
};

// Work per (b, h) pair: two [L, S_k, d] GEMMs.
int AttnThreads(const AttnDims& a, int64_t tasks) {
  const int max = ThreadsFor(a.b * a.h * 2 * a.l * a.s * a.d);
  return static_cast<int>(std::min<int64_t>(tasks, max));
}

// scores [L, S] = scale q k^T + bias.
void Scores(const AttnDims& a, const float* q, const float* k, const float* bias, float scale, float* scores) {
  Sgemm(false, true, a.l, a.s, a.d, scale, q, a.d, k, a.d, 0.0f, scores, a.s);
  const int64_t n = a.l * a.s;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) scores[i] += bias[i];
}

// Row-wise softmax of scores in place; lse[i] = log sum_j exp(scores[i, j]).
void SoftmaxRows(const AttnDims& a, float* scores, float* lse) {
  for (int64_t i = 0; i < a.l; ++i) {
    float* row = scores + i * a.s;
    float m = row[0];
    for (int64_t j = 1; j < a.s; ++j) m = row[j] > m ? row[j] : m;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < a.s; ++j) {
      const float e = fast::ExpF(row[j] - m);
      row[j] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < a.s; ++j) row[j] *= inv;
    lse[i] = m + std::log(sum);
  }
}

void ForwardF32(const AttnDims& a, const float* q, const float* k, const float* v, const float* bias, float scale,
                float* o, float* lse) {
  const int64_t tasks = a.b * a.h;
  if (tasks == 0 || a.l == 0) return;
  const int threads = AttnThreads(a, tasks);
  ParallelFor(tasks, threads, 1, [&](Range r, int64_t) {
    std::vector<float> p(static_cast<size_t>(a.l * std::max<int64_t>(a.s, 1)));
    for (int64_t t = r.begin; t < r.end; ++t) {
      const int64_t bi = t / a.h, hi = t % a.h, g = bi * a.hk + hi / a.group();
      const float* q_t = q + t * a.l * a.d;
      float* o_t = o + t * a.l * a.d;
      if (a.s == 0) {  // no keys: O = 0, lse = -inf
        std::fill(o_t, o_t + a.l * a.d, 0.0f);
        std::fill(lse + t * a.l, lse + (t + 1) * a.l, -INFINITY);
        continue;
      }
      Scores(a, q_t, k + g * a.s * a.d, bias, scale, p.data());
      SoftmaxRows(a, p.data(), lse + t * a.l);
      Sgemm(false, false, a.l, a.d, a.s, 1.0f, p.data(), a.s, v + g * a.s * a.d, a.d, 0.0f, o_t, a.d);
    }
  });
}

void BackwardF32(const AttnDims& a, const float* dout, const float* q, const float* k, const float* v,
                 const float* bias, const float* o, const float* lse, float scale, float* dq, float* dk,
                 float* dv) {
  const int64_t tasks = a.b * a.hk;
  std::fill(dk, dk + tasks * a.s * a.d, 0.0f);
  std::fill(dv, dv + tasks * a.s * a.d, 0.0f);
  if (tasks == 0 || a.l == 0) {
    std::fill(dq, dq + a.b * a.h * a.l * a.d, 0.0f);
    return;
  }
  const int threads = AttnThreads(a, tasks);
  ParallelFor(tasks, threads, 1, [&](Range r, int64_t) {
    std::vector<float> p(static_cast<size_t>(a.l * std::max<int64_t>(a.s, 1)));
    std::vector<float> dp(p.size());
    for (int64_t t = r.begin; t < r.end; ++t) {
      const int64_t bi = t / a.hk, gi = t % a.hk;
      const float* k_g = k + t * a.s * a.d;
      const float* v_g = v + t * a.s * a.d;
      float* dk_g = dk + t * a.s * a.d;
      float* dv_g = dv + t * a.s * a.d;
      for (int64_t j = 0; j < a.group(); ++j) {
        const int64_t qh = bi * a.h + gi * a.group() + j;  // flat (b, h) index of the query head
        const float* q_h = q + qh * a.l * a.d;
        const float* do_h = dout + qh * a.l * a.d;
        const float* o_h = o + qh * a.l * a.d;
        const float* lse_h = lse + qh * a.l;
        float* dq_h = dq + qh * a.l * a.d;
        if (a.s == 0) {
          std::fill(dq_h, dq_h + a.l * a.d, 0.0f);
          continue;
        }
        Scores(a, q_h, k_g, bias, scale, p.data());
        for (int64_t i = 0; i < a.l; ++i) {  // P = exp(S - lse)
          float* row = p.data() + i * a.s;
          const float m = lse_h[i];
#pragma omp simd
          for (int64_t c = 0; c < a.s; ++c) row[c] = fast::ExpF(row[c] - m);
        }
        Sgemm(true, false, a.s, a.d, a.l, 1.0f, p.data(), a.s, do_h, a.d, 1.0f, dv_g, a.d);     // dV += P^T dO
        Sgemm(false, true, a.l, a.s, a.d, 1.0f, do_h, a.d, v_g, a.d, 0.0f, dp.data(), a.s);  // dP = dO V^T
        for (int64_t i = 0; i < a.l; ++i) {  // dS = P (dP - rowsum(dO O))
          float dsum = 0.0f;
          const float* do_row = do_h + i * a.d;
          const float* o_row = o_h + i * a.d;
#pragma omp simd reduction(+ : dsum)
          for (int64_t c = 0; c < a.d; ++c) dsum += do_row[c] * o_row[c];
          float* p_row = p.data() + i * a.s;
          const float* dp_row = dp.data() + i * a.s;
#pragma omp simd
          for (int64_t c = 0; c < a.s; ++c) p_row[c] = p_row[c] * (dp_row[c] - dsum);
        }
        Sgemm(false, false, a.l, a.d, a.s, scale, p.data(), a.s, k_g, a.d, 0.0f, dq_h, a.d);  // dQ = s dS K
        Sgemm(true, false, a.s, a.d, a.l, scale, p.data(), a.s, q_h, a.d, 1.0f, dk_g, a.d);   // dK += s dS^T Q
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
// Dims from q [B, H, L, d] and k [B, Hk, S, d]; "" or the violation.
std::string ReadDims(const AotArgs& args, int q_i, int k_i, int v_i, int bias_i, mindpet::cpu::AttnDims* a) {
  if (args.ndim(q_i) != 4 || args.ndim(k_i) != 4 || args.ndim(v_i) != 4 || args.ndim(bias_i) != 2) {
    return "q, k, v must be 4-D [B, heads, length, head_dim] and bias 2-D [L, S]";
  }
  *a = {args.dim(q_i, 0), args.dim(q_i, 1), args.dim(k_i, 1), args.dim(q_i, 2), args.dim(k_i, 2), args.dim(q_i, 3)};
  for (int i : {k_i, v_i}) {
    if (args.dim(i, 0) != a->b || args.dim(i, 1) != a->hk || args.dim(i, 2) != a->s || args.dim(i, 3) != a->d) {
      return "shapes do not follow q [B,H,L,d], k [B,Hk,S,d], v [B,Hk,S,d]";
    }
  }
  if (a->hk == 0 ? a->h != 0 : a->h % a->hk != 0) return "the query heads H must be a multiple of the KV heads Hk";
  if (args.dim(bias_i, 0) != a->l || args.dim(bias_i, 1) != a->s) return "bias must be [L, S]";
  return {};
}

std::string RunAttentionForward(const AotArgs& args) {
  const int o = at::kFwdNumInputs;
  mindpet::cpu::AttnDims a{};
  std::string bad = ReadDims(args, at::kFwdQ, at::kFwdK, at::kFwdV, at::kFwdBias, &a);
  if (!bad.empty()) return bad;
  if (args.numel(o + at::kFwdO) != args.numel(at::kFwdQ) || args.numel(o + at::kFwdLse) != a.b * a.h * a.l) {
    return "outputs must be o [B,H,L,d] and lse [B,H,L]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {at::kFwdQ, at::kFwdK, at::kFwdV, at::kFwdBias, o + at::kFwdO})) {
    return "q, k, v, bias and o must share dtype float32 or float16";
  }
  if (args.dtype(o + at::kFwdLse) != DType::kFloat32) return "lse must be float32";
  bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn q(args, at::kFwdQ), k(args, at::kFwdK), v(args, at::kFwdV), bias(args, at::kFwdBias);
  FloatOut out(args, o + at::kFwdO);
  mindpet::cpu::ForwardF32(a, q.get(), k.get(), v.get(), bias.get(), static_cast<float>(args.scalar(at::kFwdScale)),
                           out.get(), static_cast<float*>(args.data(o + at::kFwdLse)));
  out.Commit();
  return {};
}

std::string RunAttentionBackward(const AotArgs& args) {
  const int o = at::kBwdNumInputs;
  mindpet::cpu::AttnDims a{};
  std::string bad = ReadDims(args, at::kBwdQ, at::kBwdK, at::kBwdV, at::kBwdBias, &a);
  if (!bad.empty()) return bad;
  const int64_t nq = args.numel(at::kBwdQ), nk = args.numel(at::kBwdK);
  if (args.numel(at::kBwdDo) != nq || args.numel(at::kBwdO) != nq || args.numel(at::kBwdLse) != a.b * a.h * a.l ||
      args.numel(o + at::kBwdDq) != nq || args.numel(o + at::kBwdDk) != nk || args.numel(o + at::kBwdDv) != nk) {
    return "shapes do not follow do, o, dq [B,H,L,d], lse [B,H,L], dk, dv [B,Hk,S,d]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {at::kBwdDo, at::kBwdQ, at::kBwdK, at::kBwdV, at::kBwdBias, at::kBwdO,
                                           o + at::kBwdDq, o + at::kBwdDk, o + at::kBwdDv})) {
    return "do, q, k, v, bias, o and the gradients must share dtype float32 or float16";
  }
  if (args.dtype(at::kBwdLse) != DType::kFloat32) return "lse must be float32";
  bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn dout(args, at::kBwdDo), q(args, at::kBwdQ), k(args, at::kBwdK), v(args, at::kBwdV),
      bias(args, at::kBwdBias), out(args, at::kBwdO);
  FloatOut dq(args, o + at::kBwdDq), dk(args, o + at::kBwdDk), dv(args, o + at::kBwdDv);
  mindpet::cpu::BackwardF32(a, dout.get(), q.get(), k.get(), v.get(), bias.get(), out.get(),
                            static_cast<const float*>(args.data(at::kBwdLse)),
                            static_cast<float>(args.scalar(at::kBwdScale)), dq.get(), dk.get(), dv.get());
  mindpet::cpu::CommitAll({&dq, &dk, &dv});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(AttentionForward, at::kFwdNumInputs + at::kFwdNumOutputs, RunAttentionForward)
MINDPET_AOT_ENTRY(AttentionBackward, at::kBwdNumInputs + at::kBwdNumOutputs, RunAttentionBackward)
