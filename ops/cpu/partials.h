// Per-chunk partial sums of weight gradients (reductions over the rows M), summed in chunk order at
// the end, so the result does not depend on which thread ran which chunk. Storage is not zeroed:
// a chunk's first tile writes its part with beta = 0 (or calls Zero).
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>

namespace mindpet {
namespace cpu {

class ThreadPartials {
 public:
  // `parts` partial sums of `size` floats each (0 parts: no rows, every sum is zero).
  ThreadPartials(int64_t parts, int64_t size)
      : size_(size), used_(parts),
        buf_(new float[static_cast<size_t>(std::max<int64_t>(parts, 1)) * static_cast<size_t>(size)]) {}
  float* part(int64_t chunk) { return buf_.get() + chunk * size_; }
  void Zero(int64_t chunk) { std::fill(part(chunk), part(chunk) + size_, 0.0f); }
  // out[i] = scale * sum_chunk part(chunk)[offset + i] for i < n, summed in chunk order.
  void ReduceInto(int64_t offset, int64_t n, float scale, float* out) const {
    const float* buf = buf_.get();
    if (used_ == 0) {
      std::fill(out, out + n, 0.0f);
      return;
    }
    for (int64_t i = 0; i < n; ++i) out[i] = buf[offset + i];
    for (int64_t t = 1; t < used_; ++t) {
      const float* p = buf + t * size_ + offset;
      for (int64_t i = 0; i < n; ++i) out[i] += p[i];
    }
    if (scale != 1.0f) {
      for (int64_t i = 0; i < n; ++i) out[i] *= scale;
    }
  }

 private:
  int64_t size_;
  int64_t used_;
  std::unique_ptr<float[]> buf_;
};

}  // namespace cpu
}  // namespace mindpet
