// Work splitting for the CPU kernels: row chunks planned up front, taken by a team of threads,
// each participant calling the sequential BLAS on its chunk.
//
// Default: an OpenMP team (the one MindSpore's own CPU operators use), one near-equal block of rows
// per thread, each block's weight-gradient partial sums kept apart and reduced in block order, so
// results do not depend on which thread ran which block. The team size follows the CPUs the process
// may use (cgroup cpuset, cgroup CPU quota) unless MINDPET_NUM_THREADS / OMP_NUM_THREADS say.
//
// Two alternatives, opt-in through the environment (read once); their comparison in
// benchmarks/RESULTS.md was made while a bug kept every kernel on one thread, so it is not settled: MINDPET_CPU_CHUNKS=guided (chunks of a shrinking share of the rows left, so a
// descheduled thread delays the call by one small chunk) and MINDPET_CPU_THREADS_BACKEND=pool (a
// blocking pool: the caller works through the chunks itself and never waits for a pool thread that
// has not started; idle threads sleep on a condition variable). Correctness never depends on the
// choice: the tests run all three.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace mindpet {
namespace cpu {

// [begin, end) of rows (or other units).
struct Range {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
};

// Whole CPUs a CPU quota of `quota_us` per `period_us` allows: floor(quota / period), at least 1;
// 0 when there is no limit (quota <= 0 or period <= 0).
int CpusFromQuota(int64_t quota_us, int64_t period_us);

// Parses cgroup v2 `cpu.max` text ("max 100000" or "150000 100000"): as CpusFromQuota; 0 when
// unlimited or unparsable.
int CpusFromCpuMax(const char* text);

// CPUs of a cpuset list ("0-3,6"): 4 + 1 = 5; 0 when unparsable.
int CpusInList(const char* text);

// Team size from its inputs: `env_threads` (> 0: MINDPET_NUM_THREADS or OMP_NUM_THREADS) wins;
// else the affinity CPUs capped by the quota CPUs (quota 0 = no limit); at least 1.
int TeamSize(int affinity_cpus, int quota_cpus, int env_threads);

// Threads a kernel call may use: TeamSize of the cgroup's cpuset (else the online CPUs), the cgroup
// quota and the environment (all read once).
int MaxThreads();

// Body of a parallel loop: the `rows` of chunk number `chunk` (chunks are numbered in row order).
using ChunkBody = std::function<void(Range rows, int64_t chunk)>;

// The chunks of [0, n) for `threads` participants: one near-equal block per thread of at least
// `grain` rows (guided: each a share 1 / (2 threads) of the rows left, at least `grain`); one chunk
// when threads <= 1 or n <= grain.
std::vector<Range> PlanChunks(int64_t n, int threads, int64_t grain);

// Runs `body` once per chunk on up to `threads` participants (the caller included), each taking the
// next chunk not yet taken; blocks until every chunk is done.
void ParallelFor(const std::vector<Range>& chunks, int threads, const ChunkBody& body);

inline void ParallelFor(int64_t n, int threads, int64_t grain, const ChunkBody& body) {
  ParallelFor(PlanChunks(n, threads, grain), threads, body);
}

// Split rows (M) across threads when each thread gets at least this many rows; otherwise the
// kernels split the output columns (so small M still uses every core and reads each weight once).
constexpr int64_t kMinRowsPerThread = 32;

inline bool SplitRows(int64_t m, int threads) { return threads <= 1 || m >= kMinRowsPerThread * threads; }

// Below this many multiply-adds (~0.4 ms on one core) a call stays on one thread: waking a team
// saves little there.
constexpr int64_t kMinParallelMacs = int64_t{1} << 25;

inline int ThreadsFor(int64_t macs) { return macs < kMinParallelMacs ? 1 : MaxThreads(); }

// Threads for row-parallel work on m rows of `macs_per_row` multiply-adds: at least `min_rows` rows
// each, one thread for small work.
inline int RowThreads(int64_t m, int64_t min_rows, int64_t macs_per_row) {
  const int64_t want = (m + min_rows - 1) / min_rows;
  const int max = ThreadsFor(m * macs_per_row);
  return static_cast<int>(want < 1 ? 1 : (want < max ? want : max));
}

// Elementwise kernels (activation, swiglu): below this many elements (~4M; ~8 ms of exact GELU on one
// core) a call stays on one thread. The transformer shapes (e.g. [1024, 1536]) stay below it on purpose:
// measured in a MiniLM train step on a shared 2-core machine, a 2-thread team for these millisecond-scale
// ops cost more (waiting for a descheduled team thread; MindSpore runs other graph ops on the other core
// meanwhile) than it saved.
constexpr int64_t kMinParallelElements = int64_t{1} << 22;

inline int ElementThreads(int64_t n) { return n < kMinParallelElements ? 1 : MaxThreads(); }

// Row normalisations (layer_norm, rms_norm) over m rows of d elements: one thread below 2^21 elements
// (~2 ms), e.g. for every BERT shape (see kMinParallelElements), else up to one thread per 8 rows.
constexpr int64_t kMinParallelNormElements = int64_t{1} << 21;

inline int NormThreads(int64_t m, int64_t d) {
  const int64_t want = m / 8 > 1 ? m / 8 : 1;
  const int max = m * d < kMinParallelNormElements ? 1 : MaxThreads();
  return static_cast<int>(want < max ? want : max);
}

// Rows per tile of work kept in cache: a tile of `width` floats per row fills about `bytes`
// (~256 KiB by default, half a core's L2), clamped to [min_rows, max_rows].
int64_t TileRows(int64_t width, int64_t bytes = 256 * 1024, int64_t min_rows = 16, int64_t max_rows = 512);

// Smallest row chunk of a row-parallel kernel: `min_chunk` rows, but small enough that every
// thread gets two chunks.
inline int64_t RowGrain(int64_t m, int threads, int64_t min_chunk) {
  const int64_t even = m / (2 * (threads > 1 ? threads : 1));
  const int64_t g = min_chunk < even ? min_chunk : even;
  return g > 1 ? g : 1;
}

// Column block [begin, end) of `part` of `parts` near-equal blocks of [0, n), aligned to `align`.
inline Range SplitRange(int64_t n, int parts, int part, int64_t align = 1) {
  const int64_t units = (n + align - 1) / align;
  const int64_t b = units * part / parts * align;
  const int64_t e = units * (part + 1) / parts * align;
  return {b < n ? b : n, e < n ? e : n};
}

// Runs body(columns) for `threads` near-equal column blocks of [0, n) (aligned to 16), dynamically
// assigned. For the few-rows paths, where each block is one GEMM.
inline void ParallelColumns(int64_t n, int threads, const std::function<void(Range cols)>& body) {
  constexpr int64_t kAlign = 16;
  const int parts = threads < 1 ? 1 : threads;
  std::vector<Range> blocks;
  for (int p = 0; p < parts; ++p) blocks.push_back(SplitRange(n, parts, p, kAlign));
  ParallelFor(blocks, threads, [&](Range cols, int64_t) {
    if (cols.size() > 0) body(cols);
  });
}

}  // namespace cpu
}  // namespace mindpet
