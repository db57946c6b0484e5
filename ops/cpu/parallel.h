// Work splitting for the CPU kernels: OpenMP threads, each calling the sequential BLAS on its part.
#pragma once
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mindpet {
namespace cpu {

inline int MaxThreads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int ThreadId() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int NumThreads() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// [begin, end) of part `part` of `parts` near-equal parts of [0, n), aligned to `align` elements.
struct Range {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
};

inline Range SplitRange(int64_t n, int parts, int part, int64_t align = 1) {
  const int64_t units = (n + align - 1) / align;
  const int64_t b = units * part / parts * align;
  const int64_t e = units * (part + 1) / parts * align;
  return {b < n ? b : n, e < n ? e : n};
}

// Split rows (M) across threads when each thread gets at least this many rows; otherwise the
// kernels split the output columns (so small M still uses every core and reads each weight once).
constexpr int64_t kMinRowsPerThread = 32;

inline bool SplitRows(int64_t m, int threads) { return threads <= 1 || m >= kMinRowsPerThread * threads; }

// Below this many multiply-adds (~0.4 ms on one core) a call stays on one thread: waking a team
// saves little there, and costs milliseconds when another process holds the other cores (a
// parallel region ends only when every thread of the team has been scheduled).
constexpr int64_t kMinParallelMacs = int64_t{1} << 25;

inline int ThreadsFor(int64_t macs) { return macs < kMinParallelMacs ? 1 : MaxThreads(); }

}  // namespace cpu
}  // namespace mindpet
