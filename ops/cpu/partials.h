// Per-thread partial sums of weight gradients (reductions over the rows M), summed at the end.
#pragma once
#include <cstdint>
#include <vector>

#include "parallel.h"

namespace mindpet {
namespace cpu {

class ThreadPartials {
 public:
  ThreadPartials(int threads, int64_t size)
      : threads_(threads), size_(size), buf_(static_cast<size_t>(threads * size), 0.0f) {}
  float* part(int thread) { return buf_.data() + thread * size_; }
  // out[i] = scale * sum_t part(t)[offset + i] for i < n.
  void ReduceInto(int64_t offset, int64_t n, float scale, float* out) const {
#pragma omp parallel for schedule(static) if (n * threads_ >= (1 << 15))
    for (int64_t i = 0; i < n; ++i) {
      float acc = 0.0f;
      for (int t = 0; t < threads_; ++t) acc += buf_[t * size_ + offset + i];
      out[i] = scale * acc;
    }
  }

 private:
  int threads_;
  int64_t size_;
  std::vector<float> buf_;
};

// Threads for row-parallel work on m rows of `macs_per_row` multiply-adds: at least `min_rows` rows
// each, one thread for small work.
inline int RowThreads(int64_t m, int64_t min_rows, int64_t macs_per_row) {
  const int64_t want = (m + min_rows - 1) / min_rows;
  const int max = ThreadsFor(m * macs_per_row);
  return static_cast<int>(want < 1 ? 1 : (want < max ? want : max));
}

}  // namespace cpu
}  // namespace mindpet
