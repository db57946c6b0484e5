// Activations of the adapter ops, by contract code (mindpet::contracts::Activation): value and
// derivative, computed in float32.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "mindpet/contracts.h"

namespace mindpet {
namespace cpu {

using contracts::Activation;

inline bool ValidActivation(int64_t code) { return code >= 0 && code < contracts::kNumActivations; }

// Reads the activation code attribute `index` of an aot call into *act; "" or the violation.
template <typename Args>
std::string ReadActivation(const Args& args, int index, Activation* act) {
  const int64_t code = static_cast<int64_t>(args.scalar(index));
  if (!ValidActivation(code)) return "unknown activation code";
  *act = static_cast<Activation>(code);
  return {};
}

inline float Sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

// act(z)
inline float Activate(Activation act, float z) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  switch (act) {
    case Activation::kIdentity: return z;
    case Activation::kRelu: return z > 0.0f ? z : 0.0f;
    case Activation::kGelu: return 0.5f * z * (1.0f + std::tanh(kSqrt2OverPi * (z + 0.044715f * z * z * z)));
    case Activation::kGeluErf: return 0.5f * z * (1.0f + std::erf(z * kInvSqrt2));
    case Activation::kSigmoid: return Sigmoid(z);
    case Activation::kTanh: return std::tanh(z);
    case Activation::kSilu: return z * Sigmoid(z);
  }
  return z;
}

// act'(z)
inline float ActivateGrad(Activation act, float z) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  constexpr float kInvSqrt2 = 0.7071067811865476f;
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  switch (act) {
    case Activation::kIdentity: return 1.0f;
    case Activation::kRelu: return z > 0.0f ? 1.0f : 0.0f;
    case Activation::kGelu: {
      const float t = std::tanh(kSqrt2OverPi * (z + 0.044715f * z * z * z));
      return 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * z * z);
    }
    case Activation::kGeluErf:
      return 0.5f * (1.0f + std::erf(z * kInvSqrt2)) + z * kInvSqrt2Pi * std::exp(-0.5f * z * z);
    case Activation::kSigmoid: {
      const float s = Sigmoid(z);
      return s * (1.0f - s);
    }
    case Activation::kTanh: {
      const float t = std::tanh(z);
      return 1.0f - t * t;
    }
    case Activation::kSilu: {
      const float s = Sigmoid(z);
      return s * (1.0f + z * (1.0f - s));
    }
  }
  return 1.0f;
}

}  // namespace cpu
}  // namespace mindpet
