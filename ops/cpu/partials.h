// Per-thread partial sums of weight gradients (reductions over the rows M), summed at the end.
// Storage is not zeroed: a thread's first tile writes its part with beta = 0, and a thread
// without rows zeroes its part (Zero). Only the parts of threads that ran are summed.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>

#include "parallel.h"

namespace mindpet {
namespace cpu {

class ThreadPartials {
 public:
  ThreadPartials(int threads, int64_t size)
      : threads_(threads), size_(size), buf_(new float[static_cast<size_t>(threads * size)]) {}
  float* part(int thread) { return buf_.get() + thread * size_; }
  void Zero(int thread) { std::fill(part(thread), part(thread) + size_, 0.0f); }
  // Called by thread 0 inside the parallel region: how many threads ran (<= threads).
  void SetUsed(int used) { used_ = used; }
  // out[i] = scale * sum_t part(t)[offset + i] for i < n.
  void ReduceInto(int64_t offset, int64_t n, float scale, float* out) const {
    const int used = used_;
    const float* buf = buf_.get();
    const int64_t size = size_;
    if (used == 1) {
      for (int64_t i = 0; i < n; ++i) out[i] = scale * buf[offset + i];
      return;
    }
#pragma omp parallel for schedule(static) if (n * used >= (1 << 20))
    for (int64_t i = 0; i < n; ++i) {
      float acc = 0.0f;
      for (int t = 0; t < used; ++t) acc += buf[t * size + offset + i];
      out[i] = scale * acc;
    }
  }

 private:
  int threads_;
  int64_t size_;
  int used_ = 1;
  std::unique_ptr<float[]> buf_;
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
