// swiglu on CPU (contract: ops/CONTRACTS.md section 8), elementwise over N = numel(gate) = numel(up):
//   forward : y = silu(gate) up,  silu(z) = z sigmoid(z)
//   backward: dgate = dy up silu'(gate),  dup = dy silu(gate)      (silu recomputed from gate; nothing saved)
// Branch-free loops on fast_math.h, an AVX2+FMA copy chosen at run time; large calls take chunks on a team
// (parallel.h), as the activation op.
#include <cstdint>

#include "aot_args.h"
#include "export.h"
#include "fast_math.h"
#include "float_views.h"
#include "mindpet/contracts.h"
#include "parallel.h"

namespace mindpet {
namespace cpu {
namespace {

using fast::Act;
using fast::ActGrad;
using contracts::Activation;

constexpr int64_t kChunkElements = int64_t{1} << 16;

MINDPET_INLINE void ForwardLoop(const float* __restrict gate, const float* __restrict up, float* __restrict y,
                                int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = Act<Activation::kSilu>(gate[i]) * up[i];
}

MINDPET_INLINE void BackwardLoop(const float* __restrict dy, const float* __restrict gate,
                                 const float* __restrict up, float* __restrict dgate, float* __restrict dup,
                                 int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float z = gate[i];
    const float s = fast::Sigmoid(z);
    const float zc = z < -100.0f ? -100.0f : z;  // s = 0 there: avoid 0 * inf
    dgate[i] = dy[i] * up[i] * (s * (1.0f + zc * (1.0f - s)));
    dup[i] = dy[i] * (z * s);
  }
}

__attribute__((target("avx2,fma"))) void ForwardAvx2(const float* g, const float* u, float* y, int64_t n) {
  ForwardLoop(g, u, y, n);
}
void ForwardBase(const float* g, const float* u, float* y, int64_t n) { ForwardLoop(g, u, y, n); }
__attribute__((target("avx2,fma"))) void BackwardAvx2(const float* dy, const float* g, const float* u, float* dg,
                                                      float* du, int64_t n) {
  BackwardLoop(dy, g, u, dg, du, n);
}
void BackwardBase(const float* dy, const float* g, const float* u, float* dg, float* du, int64_t n) {
  BackwardLoop(dy, g, u, dg, du, n);
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

void Forward(const float* gate, const float* up, float* y, int64_t n) {
  const auto fn = HasAvx2Fma() ? &ForwardAvx2 : &ForwardBase;
  ParallelFor(n, ElementThreads(n), kChunkElements,
              [&](Range r, int64_t) { fn(gate + r.begin, up + r.begin, y + r.begin, r.size()); });
}

void Backward(const float* dy, const float* gate, const float* up, float* dgate, float* dup, int64_t n) {
  const auto fn = HasAvx2Fma() ? &BackwardAvx2 : &BackwardBase;
  ParallelFor(n, ElementThreads(n), kChunkElements, [&](Range r, int64_t) {
    fn(dy + r.begin, gate + r.begin, up + r.begin, dgate + r.begin, dup + r.begin, r.size());
  });
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace sg = mindpet::contracts::swiglu;

namespace {
std::string RunSwiGluForward(const AotArgs& args) {
  const int y_idx = sg::kFwdNumInputs + sg::kFwdY;
  const int64_t n = args.numel(sg::kFwdGate);
  if (args.numel(sg::kFwdUp) != n || args.numel(y_idx) != n) return "gate, up and y must have one shape";
  if (!mindpet::cpu::SameFloatDType(args, {sg::kFwdGate, sg::kFwdUp, y_idx})) {
    return "gate, up and y must share dtype float32 or float16";
  }
  const FloatIn gate(args, sg::kFwdGate), up(args, sg::kFwdUp);
  FloatOut y(args, y_idx);
  if (n > 0) mindpet::cpu::Forward(gate.get(), up.get(), y.get(), n);
  y.Commit();
  return {};
}

std::string RunSwiGluBackward(const AotArgs& args) {
  const int o = sg::kBwdNumInputs;
  const int64_t n = args.numel(sg::kBwdGate);
  if (args.numel(sg::kBwdDy) != n || args.numel(sg::kBwdUp) != n || args.numel(o + sg::kBwdDGate) != n ||
      args.numel(o + sg::kBwdDUp) != n) {
    return "dy, gate, up, dgate and dup must have one shape";
  }
  if (!mindpet::cpu::SameFloatDType(args, {sg::kBwdDy, sg::kBwdGate, sg::kBwdUp, o + sg::kBwdDGate,
                                           o + sg::kBwdDUp})) {
    return "dy, gate, up and the gradients must share dtype float32 or float16";
  }
  const FloatIn dy(args, sg::kBwdDy), gate(args, sg::kBwdGate), up(args, sg::kBwdUp);
  FloatOut dgate(args, o + sg::kBwdDGate), dup(args, o + sg::kBwdDUp);
  if (n > 0) mindpet::cpu::Backward(dy.get(), gate.get(), up.get(), dgate.get(), dup.get(), n);
  mindpet::cpu::CommitAll({&dgate, &dup});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(SwiGluForward, sg::kFwdNumInputs + sg::kFwdNumOutputs, RunSwiGluForward)
MINDPET_AOT_ENTRY(SwiGluBackward, sg::kBwdNumInputs + sg::kBwdNumOutputs, RunSwiGluBackward)
