#include "blas.h"
#include "parallel.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

namespace mindpet {
namespace cpu {
namespace {

// oneDNN: row-major, transposition as 'N'/'T'.
using DnnlSgemm = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
// CBLAS (32-bit ints): order 101 = row-major, 111 = no transpose, 112 = transpose.
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float,
                            float*, int);
using SetThreads = void (*)(int);

struct BlasState {
  std::mutex mutex;
  bool tried = false;
  DnnlSgemm dnnl = nullptr;
  CblasSgemm cblas = nullptr;
  std::string description = "no BLAS resolved yet";
};

BlasState& State() {
  static BlasState state;
  return state;
}

// Resolve from an open handle; true when an sgemm symbol was found.
bool ResolveFrom(void* handle, const std::string& name, BlasState* s) {
  if (handle == nullptr) return false;
  if (auto f = reinterpret_cast<DnnlSgemm>(dlsym(handle, "dnnl_sgemm"))) {
    s->dnnl = f;
    s->cblas = nullptr;
    s->description = "oneDNN dnnl_sgemm from " + name;
    return true;
  }
  for (const char* sym : {"cblas_sgemm", "scipy_cblas_sgemm"}) {
    if (auto f = reinterpret_cast<CblasSgemm>(dlsym(handle, sym))) {
      // One BLAS thread per call: the kernels parallelise with OpenMP themselves.
      for (const char* setter : {"openblas_set_num_threads", "scipy_openblas_set_num_threads"}) {
        if (auto set = reinterpret_cast<SetThreads>(dlsym(handle, setter))) set(1);
      }
      s->cblas = f;
      s->dnnl = nullptr;
      s->description = std::string(sym) + " from " + name;
      return true;
    }
  }
  return false;
}

void ResolveDefaultLocked(BlasState* s) {
  if (s->tried) return;
  s->tried = true;
  if (const char* env = std::getenv("MINDPET_BLAS_LIBRARY")) {
    if (*env && ResolveFrom(dlopen(env, RTLD_NOW | RTLD_LOCAL), env, s)) return;
  }
  // MindSpore has loaded its oneDNN by the time a CPU kernel runs.
  if (ResolveFrom(dlopen("libdnnl.so.3", RTLD_NOW | RTLD_NOLOAD), "libdnnl.so.3 (already loaded)", s)) return;
  s->description =
      "no BLAS found: neither MINDPET_BLAS_LIBRARY nor MindSpore's libdnnl.so.3 provides an sgemm";
}

}  // namespace

bool BlasReady() {
  BlasState& s = State();
  std::lock_guard<std::mutex> lock(s.mutex);
  ResolveDefaultLocked(&s);
  return s.dnnl != nullptr || s.cblas != nullptr;
}

const char* BlasDescription() {
  BlasState& s = State();
  std::lock_guard<std::mutex> lock(s.mutex);
  ResolveDefaultLocked(&s);
  return s.description.c_str();
}

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // C = beta C (BLAS libraries differ on k == 0)
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    }
    return;
  }
  BlasState& s = State();  // resolved before any parallel region (BlasReady), read-only here
  if (s.dnnl != nullptr) {
    s.dnnl(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    s.cblas(101, trans_a ? 112 : 111, trans_b ? 112 : 111, static_cast<int>(m), static_cast<int>(n),
            static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c,
            static_cast<int>(ldc));
  }
}

}  // namespace cpu
}  // namespace mindpet

extern "C" int MindpetSetBlasLibrary(const char* path) {
  using namespace mindpet::cpu;
  BlasState& s = State();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (path == nullptr) return 1;
  if (!ResolveFrom(dlopen(path, RTLD_NOW | RTLD_LOCAL), path, &s)) return 2;  // keep the default search
  s.tried = true;
  return 0;
}

extern "C" const char* MindpetBlasDescription() { return mindpet::cpu::BlasDescription(); }

extern "C" __attribute__((visibility("default"))) int64_t MindpetMinParallelMacs() {
  return mindpet::cpu::kMinParallelMacs;
}
