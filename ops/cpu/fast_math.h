// Branch-free float32 exp / erfc and the contract activations built on them, for elementwise loops
// the compiler vectorises (no libm call inside the loop). Used by the activation op (activation.cc);
// the GEMM-based adapter kernels keep the libm versions of activation.h.
//
// Accuracy (float32 arithmetic):
//   ExpF    x clamped to [-87, 88]; 7th-order Taylor polynomial on |r| <= ln2/2: relative error ~2 ulp.
//   ErfcF   x >= 0: t exp(-x^2 + P(t)), t = 1/(1 + x/2), P of degree 9 (the Chebyshev fit of
//           Numerical Recipes, section 6.2): relative error < 1.2e-7 in float64, ~1e-6 in float32.
//   tanh    1 - 2/(1 + exp(2|u|)): absolute error ~2e-7 (relative error is larger only near 0).
#pragma once
#include <cstdint>
#include <cstring>

#include "mindpet/contracts.h"

#define MINDPET_INLINE inline __attribute__((always_inline))

namespace mindpet {
namespace cpu {
namespace fast {

MINDPET_INLINE float Bits(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof(f));
  return f;
}

// exp(x) for x in float32 (saturates: exp(-87) for x < -87, exp(88) for x > 88).
MINDPET_INLINE float ExpF(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;      // ln 2 = kLn2Hi + kLn2Lo (Cody-Waite split)
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;       // 1.5 * 2^23: (v + kRound) - kRound rounds v to an integer
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float n = (x * kLog2e + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;  // |r| <= ln2 / 2
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * Bits((static_cast<int32_t>(n) + 127) << 23);  // p * 2^n, n in [-126, 127]
}

// erfc(a) for a >= 0.
MINDPET_INLINE float ErfcNonNeg(float a) {
  const float t = 1.0f / (1.0f + 0.5f * a);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return t * ExpF(p - a * a);
}

// Phi(z) = 0.5 (1 + erf(z / sqrt 2)) = 0.5 erfc(-z / sqrt 2), accurate in both tails.
MINDPET_INLINE float NormalCdf(float z) {
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  const float a = z < 0.0f ? -z : z;
  const float half_tail = 0.5f * ErfcNonNeg(a * kInvSqrt2);  // Phi(-|z|)
  return z < 0.0f ? half_tail : 1.0f - half_tail;
}

MINDPET_INLINE float Sigmoid(float z) { return 1.0f / (1.0f + ExpF(-z)); }

MINDPET_INLINE float Tanh(float u) {
  const float a = u < 0.0f ? -u : u;
  const float t = 1.0f - 2.0f / (1.0f + ExpF(2.0f * a));
  return u < 0.0f ? -t : t;
}

using contracts::Activation;

// act(z) (see ops/CONTRACTS.md, activation codes).
template <Activation A>
MINDPET_INLINE float Act(float z) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  if constexpr (A == Activation::kIdentity) return z;
  if constexpr (A == Activation::kRelu) return z > 0.0f ? z : 0.0f;
  if constexpr (A == Activation::kGelu) return 0.5f * z * (1.0f + Tanh(kSqrt2OverPi * (z + 0.044715f * z * z * z)));
  if constexpr (A == Activation::kGeluErf) return z * NormalCdf(z);
  if constexpr (A == Activation::kSigmoid) return Sigmoid(z);
  if constexpr (A == Activation::kTanh) return Tanh(z);
  if constexpr (A == Activation::kSilu) return z * Sigmoid(z);
  return z;
}

// act'(z). Products that would be 0 * inf for huge |z| are guarded (the derivative tends to 0 or 1).
template <Activation A>
MINDPET_INLINE float ActGrad(float z) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  if constexpr (A == Activation::kIdentity) return 1.0f;
  if constexpr (A == Activation::kRelu) return z > 0.0f ? 1.0f : 0.0f;
  if constexpr (A == Activation::kGelu) {
    const float zc = z < -10.0f ? -10.0f : (z > 10.0f ? 10.0f : z);  // derivative is 0 / 1 beyond
    const float t = Tanh(kSqrt2OverPi * (zc + 0.044715f * zc * zc * zc));
    return 0.5f * (1.0f + t) + 0.5f * zc * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * zc * zc);
  }
  if constexpr (A == Activation::kGeluErf) {
    const float zc = z < -20.0f ? -20.0f : (z > 20.0f ? 20.0f : z);  // z phi(z) underflows beyond
    return NormalCdf(z) + zc * kInvSqrt2Pi * ExpF(-0.5f * zc * zc);
  }
  if constexpr (A == Activation::kSigmoid) {
    const float s = Sigmoid(z);
    return s * (1.0f - s);
  }
  if constexpr (A == Activation::kTanh) {
    const float t = Tanh(z);
    return 1.0f - t * t;
  }
  if constexpr (A == Activation::kSilu) {
    const float s = Sigmoid(z);
    const float zc = z < -100.0f ? -100.0f : z;  // s = 0 there: avoid 0 * inf
    return s * (1.0f + zc * (1.0f - s));
  }
  return 1.0f;
}

}  // namespace fast
}  // namespace cpu
}  // namespace mindpet
