// The CPU kernels' thread pool and team sizing (see parallel.h).
#include "parallel.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "export.h"

#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_num_threads() { return 1; }
inline int omp_get_thread_num() { return 0; }
#endif

namespace mindpet {
namespace cpu {

int CpusFromQuota(int64_t quota_us, int64_t period_us) {
  if (quota_us <= 0 || period_us <= 0) return 0;
  const int64_t cpus = quota_us / period_us;
  return static_cast<int>(std::max<int64_t>(cpus, 1));
}

int CpusFromCpuMax(const char* text) {
  if (text == nullptr) return 0;
  char quota[32] = {0};
  long long period = 0;
  if (std::sscanf(text, "%31s %lld", quota, &period) != 2) return 0;
  if (std::strcmp(quota, "max") == 0) return 0;
  char* end = nullptr;
  const long long q = std::strtoll(quota, &end, 10);
  if (end == quota || *end != '\0') return 0;
  return CpusFromQuota(q, period);
}

int CpusInList(const char* text) {
  if (text == nullptr) return 0;
  int count = 0;
  const char* p = text;
  while (*p != '\0' && *p != '\n') {
    char* end = nullptr;
    const long first = std::strtol(p, &end, 10);
    if (end == p || first < 0) return 0;
    long last = first;
    p = end;
    if (*p == '-') {
      last = std::strtol(p + 1, &end, 10);
      if (end == p + 1 || last < first) return 0;
      p = end;
    }
    count += static_cast<int>(last - first + 1);
    if (*p == ',') ++p;
    else if (*p != '\0' && *p != '\n') return 0;
  }
  return count;
}

int TeamSize(int affinity_cpus, int quota_cpus, int env_threads) {
  if (env_threads > 0) return env_threads;
  int n = affinity_cpus > 0 ? affinity_cpus : 1;
  if (quota_cpus > 0 && quota_cpus < n) n = quota_cpus;
  return n;
}

namespace {

// First file among `paths` that opens; its first line into buf. False when none.
bool ReadFirstLine(std::initializer_list<const char*> paths, char* buf, int size) {
  for (const char* path : paths) {
    if (FILE* f = std::fopen(path, "r")) {
      const bool ok = std::fgets(buf, size, f) != nullptr;
      std::fclose(f);
      if (ok) return true;
    }
  }
  return false;
}

// CPUs of the cgroup quota of this process (v2 cpu.max, else v1 cfs quota/period); 0 = no limit.
int QuotaCpus() {
  char buf[128];
  if (ReadFirstLine({"/sys/fs/cgroup/cpu.max"}, buf, sizeof buf)) return CpusFromCpuMax(buf);
  char period[64];
  if (ReadFirstLine({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"}, buf,
                    sizeof buf) &&
      ReadFirstLine({"/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"},
                    period, sizeof period)) {
    return CpusFromQuota(std::strtoll(buf, nullptr, 10), std::strtoll(period, nullptr, 10));
  }
  return 0;
}

// MINDPET_NUM_THREADS, else the OpenMP runtime's thread count (OMP_NUM_THREADS as parsed when the
// process started: MindSpore later sets OMP_NUM_THREADS=1 in its own environment, so getenv would
// say 1); 0 when neither limits.
int EnvThreads() {
  if (const char* v = std::getenv("MINDPET_NUM_THREADS")) {
    const long n = std::strtol(v, nullptr, 10);
    if (n > 0) return static_cast<int>(std::min<long>(n, 256));
  }
#ifdef _OPENMP
  static const int omp_threads = omp_get_max_threads();
  if (omp_threads < std::max(1u, std::thread::hardware_concurrency())) return omp_threads;
#endif
  return 0;
}

// CPUs this process may use: the cgroup's cpuset (cpuset.cpus.effective, v2 or v1), else the
// online CPUs. Not sched_getaffinity: MindSpore binds its threads (the kernels' callers) to single
// cores, and a thread's mask would then say 1.
int AffinityCpus() {
  char buf[512];
  if (ReadFirstLine({"/sys/fs/cgroup/cpuset.cpus.effective", "/sys/fs/cgroup/cpuset/cpuset.effective_cpus",
                     "/sys/fs/cgroup/cpuset/cpuset.cpus"},
                    buf, sizeof buf)) {
    const int n = CpusInList(buf);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// One call of ParallelFor, shared by its participants (pool threads hold it by shared_ptr, so a
// thread that wakes after the call returned finds no chunk and never touches the body or the chunks:
// `body` and `chunks` point into the caller's frame and are read only for a claimed chunk c < n, which
// the caller waits for; the count `n` is the job's own, since a late thread reads it after the return).
struct Job {
  const ChunkBody* body;
  const std::vector<Range>* chunks;
  int64_t n = 0;  // chunks->size(), copied
  int threads;
  std::atomic<int64_t> next{0};  // first unclaimed chunk
  std::atomic<int64_t> done{0};  // chunks finished
  std::atomic<int> joined{0};    // pool threads that joined (at most threads - 1)
  std::mutex mutex;
  std::condition_variable finished;

  // Runs chunks until none is left.
  void Work() {
    for (int64_t c = next.fetch_add(1, std::memory_order_relaxed); c < n;
         c = next.fetch_add(1, std::memory_order_relaxed)) {
      (*body)((*chunks)[c], c);
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        std::lock_guard<std::mutex> lock(mutex);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  // Publishes `job` to up to `helpers` pool threads (starting threads as needed).
  void Offer(const std::shared_ptr<Job>& job, int helpers) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_) < helpers) {
      std::thread(&Pool::Loop, this).detach();
      ++workers_;
    }
    job_ = job;
    ++generation_;
    if (helpers >= static_cast<int>(workers_)) {
      wake_.notify_all();
    } else {
      for (int i = 0; i < helpers; ++i) wake_.notify_one();
    }
  }

  static Pool& Get() {
    static Pool* pool = new Pool();  // never destroyed: its threads are detached
    return *pool;
  }

 private:
  void Loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      if (job && job->joined.fetch_add(1, std::memory_order_relaxed) < job->threads - 1) job->Work();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<Job> job_;
  uint64_t generation_ = 0;
  unsigned workers_ = 0;
};

}  // namespace

int MaxThreads() {
  static const int cpus = AffinityCpus();
  static const int quota = QuotaCpus();
  static const int env = EnvThreads();
  return TeamSize(cpus, quota, env);
}

// Whether the environment variable `name` is set to `value`.
static bool EnvIs(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

std::vector<Range> PlanChunks(int64_t n, int threads, int64_t grain) {
  std::vector<Range> chunks;
  if (n <= 0) return chunks;
  if (grain < 1) grain = 1;
  if (threads <= 1 || n <= grain) return {Range{0, n}};
  static const bool guided = EnvIs("MINDPET_CPU_CHUNKS", "guided");
  if (!guided) {  // one near-equal block per thread, at least `grain` rows each
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, n / grain));
    for (int64_t p = 0; p < parts; ++p) chunks.push_back({n * p / parts, n * (p + 1) / parts});
    return chunks;
  }
  for (int64_t begin = 0; begin < n;) {
    const int64_t share = (n - begin + 2 * threads - 1) / (2 * threads);
    const int64_t size = std::min(n - begin, std::max(grain, share));
    chunks.push_back({begin, begin + size});
    begin += size;
  }
  return chunks;
}

void ParallelFor(const std::vector<Range>& chunks, int threads, const ChunkBody& body) {
  const int64_t n = static_cast<int64_t>(chunks.size());
  if (n == 0) return;
  if (threads <= 1 || n == 1) {
    for (int64_t c = 0; c < n; ++c) body(chunks[c], c);
    return;
  }
  static const bool use_pool = EnvIs("MINDPET_CPU_THREADS_BACKEND", "pool");
  if (!use_pool) {  // OpenMP, chunks dealt round-robin by thread number (static, as before the pool)
#pragma omp parallel num_threads(static_cast<int>(std::min<int64_t>(threads, n)))
    {
      const int64_t step = omp_get_num_threads();
      for (int64_t c = omp_get_thread_num(); c < n; c += step) body(chunks[c], c);
    }
    return;
  }
  auto job = std::make_shared<Job>();
  job->body = &body;
  job->chunks = &chunks;
  job->n = n;
  job->threads = threads;
  Pool::Get().Offer(job, static_cast<int>(std::min<int64_t>(threads, n)) - 1);
  job->Work();
  if (job->done.load(std::memory_order_acquire) != n) {
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished.wait(lock, [&] { return job->done.load(std::memory_order_acquire) == n; });
  }
}

int64_t TileRows(int64_t width, int64_t bytes, int64_t min_rows, int64_t max_rows) {
  const int64_t rows = bytes / (static_cast<int64_t>(sizeof(float)) * std::max<int64_t>(width, 1));
  return std::clamp<int64_t>(rows, min_rows, max_rows);
}

}  // namespace cpu
}  // namespace mindpet

// Team sizing, exported for tests (ctypes).
MINDPET_AOT_EXPORT int MindpetCpusFromQuota(int64_t quota_us, int64_t period_us) {
  return mindpet::cpu::CpusFromQuota(quota_us, period_us);
}
MINDPET_AOT_EXPORT int MindpetCpusFromCpuMax(const char* text) { return mindpet::cpu::CpusFromCpuMax(text); }
MINDPET_AOT_EXPORT int MindpetTeamSize(int affinity_cpus, int quota_cpus, int env_threads) {
  return mindpet::cpu::TeamSize(affinity_cpus, quota_cpus, env_threads);
}
MINDPET_AOT_EXPORT int MindpetCpusInList(const char* text) { return mindpet::cpu::CpusInList(text); }
MINDPET_AOT_EXPORT int MindpetMaxThreads() { return mindpet::cpu::MaxThreads(); }
