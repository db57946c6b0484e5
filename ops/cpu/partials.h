// Per-participant partial sums of weight gradients (reductions over the rows M), summed at the end.
// Storage is not zeroed: a slot's first chunk writes its part with beta = 0 (or calls Zero), and
// only the parts of the slots that ran (ParallelFor's return value) are summed.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>

namespace mindpet {
namespace cpu {

class ThreadPartials {
 public:
  ThreadPartials(int slots, int64_t size)
      : size_(size), buf_(new float[static_cast<size_t>(std::max(slots, 1)) * static_cast<size_t>(size)]) {}
  float* part(int slot) { return buf_.get() + slot * size_; }
  void Zero(int slot) { std::fill(part(slot), part(slot) + size_, 0.0f); }
  // How many slots ran (ParallelFor's return value; 0 = no rows: the sums are zero).
  void SetUsed(int used) { used_ = used; }
  // out[i] = scale * sum_slot part(slot)[offset + i] for i < n.
  void ReduceInto(int64_t offset, int64_t n, float scale, float* out) const {
    const float* buf = buf_.get();
    if (used_ == 0) {
      std::fill(out, out + n, 0.0f);
      return;
    }
    for (int64_t i = 0; i < n; ++i) out[i] = buf[offset + i];
    for (int t = 1; t < used_; ++t) {
      const float* p = buf + t * size_ + offset;
      for (int64_t i = 0; i < n; ++i) out[i] += p[i];
    }
    if (scale != 1.0f) {
      for (int64_t i = 0; i < n; ++i) out[i] *= scale;
    }
  }

 private:
  int64_t size_;
  int used_ = 0;
  std::unique_ptr<float[]> buf_;
};

}  // namespace cpu
}  // namespace mindpet
