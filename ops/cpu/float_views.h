// float32 views of kernel tensors: float32 tensors are used in place, float16 tensors are widened
// into a float32 buffer (inputs) or computed in a float32 buffer and rounded once (outputs).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "aot_args.h"
#include "half.h"

namespace mindpet {
namespace cpu {

class FloatIn {
 public:
  FloatIn() = default;
  // `enabled == false` gives a null view (an optional input that is absent).
  FloatIn(const AotArgs& args, int i, bool enabled = true) {
    if (!enabled) return;
    if (args.dtype(i) == DType::kFloat32) {
      ptr_ = static_cast<const float*>(args.data(i));
    } else {
      buf_.resize(static_cast<size_t>(args.numel(i)));
      HalfToFloatN(static_cast<const uint16_t*>(args.data(i)), buf_.data(), args.numel(i));
      ptr_ = buf_.data();
    }
  }
  FloatIn(const FloatIn&) = delete;
  FloatIn& operator=(const FloatIn&) = delete;
  const float* get() const { return ptr_; }

 private:
  const float* ptr_ = nullptr;
  std::vector<float> buf_;
};

class FloatOut {
 public:
  FloatOut(const AotArgs& args, int i) : n_(args.numel(i)) {
    if (args.dtype(i) == DType::kFloat32) {
      ptr_ = static_cast<float*>(args.data(i));
    } else {
      buf_.resize(static_cast<size_t>(n_));
      ptr_ = buf_.data();
      half_ = static_cast<uint16_t*>(args.data(i));
    }
  }
  FloatOut(const FloatOut&) = delete;
  FloatOut& operator=(const FloatOut&) = delete;
  float* get() { return ptr_; }
  // Store the result in the output tensor (rounds float16 outputs once).
  void Commit() {
    if (half_ != nullptr) FloatToHalfN(buf_.data(), half_, n_);
  }

 private:
  int64_t n_;
  float* ptr_ = nullptr;
  uint16_t* half_ = nullptr;
  std::vector<float> buf_;
};

// Commits every output view of an entry point (float16 outputs are rounded once here).
inline void CommitAll(std::initializer_list<FloatOut*> outs) {
  for (FloatOut* out : outs) out->Commit();
}

// The contract violation of a call whose tensors do not share one floating dtype.
constexpr const char* kSameFloatDTypeMessage = "all tensors must share dtype float32 or float16";

// True when every listed parameter is float32, or every one is float16.
inline bool SameFloatDType(const AotArgs& args, std::initializer_list<int> indices) {
  DType first = DType::kOther;
  for (int i : indices) {
    const DType t = args.dtype(i);
    if (t == DType::kOther) return false;
    if (first == DType::kOther) first = t;
    if (t != first) return false;
  }
  return true;
}

}  // namespace cpu
}  // namespace mindpet
