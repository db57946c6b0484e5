// The LoRA dropout mask of x [M, K] as lora_linear and quant_lora_linear read it (ops/CONTRACTS.md
// sections 1 and 6, has_mask):
//   0  none       (x_d = x)
//   1  explicit   the mask input is a tensor of x's shape and dtype (values 0 or 1/(1-p))
//   2  hashed     the mask input is the int64 dropout key [3] = (seed, offset, bits of float32 p), and
//                 mask[i, j] = dropout_mask's element offset + i K + j (section 10), generated wherever it is
//                 used (forward x_d, backward dA's x_d and dx's * mask), so no [M, K] mask exists. In a
//                 float16 op the kept value is rounded to float16, as dropout_mask's float16 mask.
// Every use is one call, Apply, of a block of rows and columns, so the result is the explicit mode's
// with dropout_mask's mask, whatever the block (thread split).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "aot_args.h"
#include "attention_dropout.h"
#include "fast_math.h"
#include "float_views.h"
#include "half.h"

namespace mindpet {
namespace cpu {
namespace lora_mask {

enum Mode : int { kNone = 0, kExplicit = 1, kHashed = 2 };
constexpr int64_t kKeySize = 3;  // seed, offset, bits of float32 p

// dst[t] = src[t] * (keep(counter + t) ? kept : 0) for t in [0, n); src and dst may be the same.
MINDPET_INLINE void HashedRow(uint64_t seed, uint64_t counter, uint32_t threshold, float kept, const float* src,
                              float* dst, int64_t n) {
  dropout_bits::ForEachCounterRun(seed, counter, n, [&](int64_t i, uint64_t row_key, uint32_t j0, int64_t len) {
    const float* s = src + i;
    float* d = dst + i;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      d[t] = s[t] * (dropout_bits::ColumnBits(row_key, j0 + static_cast<uint32_t>(t)) >= threshold ? kept : 0.0f);
    }
  });
}
__attribute__((target("avx2"))) inline void HashedRowAvx2(uint64_t seed, uint64_t counter, uint32_t threshold,
                                                          float kept, const float* src, float* dst, int64_t n) {
  HashedRow(seed, counter, threshold, kept, src, dst, n);
}
inline void HashedRowBase(uint64_t seed, uint64_t counter, uint32_t threshold, float kept, const float* src,
                          float* dst, int64_t n) {
  HashedRow(seed, counter, threshold, kept, src, dst, n);
}

inline int64_t ReadKey(const AotArgs& args, int i, int t) {
  int64_t v;
  std::memcpy(&v, static_cast<const char*>(args.data(i)) + t * sizeof(int64_t), sizeof(v));
  return v;
}

// The checks of the mask input `i` for mode `mode` with x [m, k] of dtype `x_dtype`; "" when they hold.
inline std::string Check(const AotArgs& args, int i, int mode, DType x_dtype, int64_t m, int64_t k) {
  if (mode == kNone) return "";
  if (mode == kExplicit) {
    if (args.numel(i) != m * k || args.dtype(i) != x_dtype) return "mask must have the shape and dtype of x";
    return "";
  }
  if (mode != kHashed) return "has_mask must be 0, 1 or 2";
  if (std::strcmp(args.dtype_name(i), "int64") != 0 || args.numel(i) != kKeySize) {
    return "with has_mask 2, mask must be the int64 dropout key [3] (seed, offset, bits of float32 p)";
  }
  const uint32_t p_bits = static_cast<uint32_t>(ReadKey(args, i, 2));
  float p;
  std::memcpy(&p, &p_bits, sizeof(p));
  if (!(p >= 0.0f && p < 1.0f)) return "the dropout key's p must be in [0, 1)";
  return "";
}

class Source {
 public:
  // The mask of input `i` in mode `mode` (checked by Check); x [.., k] of dtype `x_dtype`.
  Source(const AotArgs& args, int i, int mode, DType x_dtype, int64_t k)
      : mode_(mode), k_(k), explicit_(args, i, mode == kExplicit) {
    if (mode != kHashed) return;
    seed_ = static_cast<uint64_t>(ReadKey(args, i, 0));
    offset_ = static_cast<uint64_t>(ReadKey(args, i, 1));
    const uint32_t p_bits = static_cast<uint32_t>(ReadKey(args, i, 2));
    float p;
    std::memcpy(&p, &p_bits, sizeof(p));
    threshold_ = dropout_bits::Threshold(p);
    kept_ = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
    if (x_dtype == DType::kFloat16) kept_ = HalfToFloat(FloatToHalf(kept_));
    static const bool avx2 = __builtin_cpu_supports("avx2");
    row_ = avx2 ? &HashedRowAvx2 : &HashedRowBase;
  }
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  bool active() const { return mode_ != kNone; }

  // dst[i, c] = src[i, c] * mask[r0 + i, c0 + c] for i < rows, c < cols (leading dimensions ld_src, ld_dst;
  // src and dst may be the same block).
  void Apply(int64_t r0, int64_t rows, int64_t c0, int64_t cols, const float* src, int64_t ld_src, float* dst,
             int64_t ld_dst) const {
    for (int64_t i = 0; i < rows; ++i) {
      const float* s = src + i * ld_src;
      float* d = dst + i * ld_dst;
      if (mode_ == kHashed) {
        row_(seed_, offset_ + static_cast<uint64_t>((r0 + i) * k_ + c0), threshold_, kept_, s, d, cols);
      } else {
        const float* mk = explicit_.get() + (r0 + i) * k_ + c0;
        for (int64_t j = 0; j < cols; ++j) d[j] = s[j] * mk[j];
      }
    }
  }

 private:
  using RowFn = void (*)(uint64_t, uint64_t, uint32_t, float, const float*, float*, int64_t);
  int mode_;
  int64_t k_;
  FloatIn explicit_;
  uint64_t seed_ = 0, offset_ = 0;
  uint32_t threshold_ = 0;
  float kept_ = 1.0f;
  RowFn row_ = nullptr;
};

}  // namespace lora_mask
}  // namespace cpu
}  // namespace mindpet
