// activation on CPU (contract: ops/CONTRACTS.md section 4), elementwise over N = numel(x):
//   forward : y = act(x)
//   backward: dx = dy * act'(x)    (act' recomputed from x)
// One loop per activation code, written branch-free on fast_math.h so the compiler vectorises it;
// an AVX2+FMA copy is chosen at run time when the CPU has them. Participants (large calls only) take
// dynamically scheduled chunks (parallel.h).
#include <cstdint>

#include "activation.h"
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

template <Activation A>
MINDPET_INLINE void ForwardLoop(const float* __restrict x, float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = Act<A>(x[i]);
}

template <Activation A>
MINDPET_INLINE void BackwardLoop(const float* __restrict dy, const float* __restrict x, float* __restrict dx,
                                 int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * ActGrad<A>(x[i]);
}

template <Activation A>
__attribute__((target("avx2,fma"))) void ForwardAvx2(const float* x, float* y, int64_t n) {
  ForwardLoop<A>(x, y, n);
}
template <Activation A>
void ForwardBase(const float* x, float* y, int64_t n) {
  ForwardLoop<A>(x, y, n);
}
template <Activation A>
__attribute__((target("avx2,fma"))) void BackwardAvx2(const float* dy, const float* x, float* dx, int64_t n) {
  BackwardLoop<A>(dy, x, dx, n);
}
template <Activation A>
void BackwardBase(const float* dy, const float* x, float* dx, int64_t n) {
  BackwardLoop<A>(dy, x, dx, n);
}

bool HasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

using ForwardFn = void (*)(const float*, float*, int64_t);
using BackwardFn = void (*)(const float*, const float*, float*, int64_t);

template <Activation A>
ForwardFn PickForward() {
  return HasAvx2Fma() ? &ForwardAvx2<A> : &ForwardBase<A>;
}
template <Activation A>
BackwardFn PickBackward() {
  return HasAvx2Fma() ? &BackwardAvx2<A> : &BackwardBase<A>;
}

ForwardFn ForwardFor(Activation act) {
  switch (act) {
    case Activation::kIdentity: return PickForward<Activation::kIdentity>();
    case Activation::kRelu: return PickForward<Activation::kRelu>();
    case Activation::kGelu: return PickForward<Activation::kGelu>();
    case Activation::kGeluErf: return PickForward<Activation::kGeluErf>();
    case Activation::kSigmoid: return PickForward<Activation::kSigmoid>();
    case Activation::kTanh: return PickForward<Activation::kTanh>();
    case Activation::kSilu: return PickForward<Activation::kSilu>();
  }
  return nullptr;
}

BackwardFn BackwardFor(Activation act) {
  switch (act) {
    case Activation::kIdentity: return PickBackward<Activation::kIdentity>();
    case Activation::kRelu: return PickBackward<Activation::kRelu>();
    case Activation::kGelu: return PickBackward<Activation::kGelu>();
    case Activation::kGeluErf: return PickBackward<Activation::kGeluErf>();
    case Activation::kSigmoid: return PickBackward<Activation::kSigmoid>();
    case Activation::kTanh: return PickBackward<Activation::kTanh>();
    case Activation::kSilu: return PickBackward<Activation::kSilu>();
  }
  return nullptr;
}

// Elements per chunk: at least 64 Ki (a chunk is a few hundred microseconds of work).
constexpr int64_t kChunkElements = int64_t{1} << 16;

void Forward(Activation act, const float* x, float* y, int64_t n) {
  const ForwardFn fn = ForwardFor(act);
  ParallelFor(n, ElementThreads(n), kChunkElements,
              [&](Range r, int64_t) { fn(x + r.begin, y + r.begin, r.size()); });
}

void Backward(Activation act, const float* dy, const float* x, float* dx, int64_t n) {
  const BackwardFn fn = BackwardFor(act);
  ParallelFor(n, ElementThreads(n), kChunkElements,
              [&](Range r, int64_t) { fn(dy + r.begin, x + r.begin, dx + r.begin, r.size()); });
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace ac = mindpet::contracts::activation;

namespace {
std::string RunActivationForward(const AotArgs& args) {
  const int y_idx = ac::kFwdNumInputs + ac::kFwdY;
  const int64_t n = args.numel(ac::kFwdX);
  if (args.numel(y_idx) != n) return "y must have the shape of x";
  if (!mindpet::cpu::SameFloatDType(args, {ac::kFwdX, y_idx})) {
    return "x and y must share dtype float32 or float16";
  }
  mindpet::cpu::Activation act{};
  const std::string bad = mindpet::cpu::ReadActivation(args, ac::kFwdActivation, &act);
  if (!bad.empty()) return bad;
  const FloatIn x(args, ac::kFwdX);
  FloatOut y(args, y_idx);
  if (n > 0) mindpet::cpu::Forward(act, x.get(), y.get(), n);
  y.Commit();
  return {};
}

std::string RunActivationBackward(const AotArgs& args) {
  const int dx_idx = ac::kBwdNumInputs + ac::kBwdDx;
  const int64_t n = args.numel(ac::kBwdX);
  if (args.numel(ac::kBwdDy) != n || args.numel(dx_idx) != n) {
    return "dy, x and dx must have one shape";
  }
  if (!mindpet::cpu::SameFloatDType(args, {ac::kBwdDy, ac::kBwdX, dx_idx})) {
    return "dy, x and dx must share dtype float32 or float16";
  }
  mindpet::cpu::Activation act{};
  const std::string bad = mindpet::cpu::ReadActivation(args, ac::kBwdActivation, &act);
  if (!bad.empty()) return bad;
  const FloatIn dy(args, ac::kBwdDy), x(args, ac::kBwdX);
  FloatOut dx(args, dx_idx);
  if (n > 0) mindpet::cpu::Backward(act, dy.get(), x.get(), dx.get(), n);
  dx.Commit();
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(ActivationForward, ac::kFwdNumInputs + ac::kFwdNumOutputs, RunActivationForward)
MINDPET_AOT_ENTRY(ActivationBackward, ac::kBwdNumInputs + ac::kBwdNumOutputs, RunActivationBackward)
