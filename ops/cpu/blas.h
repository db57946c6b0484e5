// Run-time resolved single-precision GEMM (row-major), the only BLAS entry the CPU kernels use.
//
// The library is resolved at run time, never linked: MindSpore's own oneDNN (`libdnnl.so.3`,
// `dnnl_sgemm`, sequential per call) by default, or any library exporting `cblas_sgemm` /
// `scipy_cblas_sgemm` (e.g. scipy-openblas32) named by MindpetSetBlasLibrary or by the environment
// variable MINDPET_BLAS_LIBRARY. Each call is single-threaded: the kernels split work across
// OpenMP threads themselves.
#pragma once
#include <cstdint>
#include <string>

namespace mindpet {
namespace cpu {

// True when a GEMM is available (resolving it on first use).
bool BlasReady();

// Human-readable name of the resolved library, or why none was found.
const char* BlasDescription();

// "" when a GEMM is available, else why not (the contract-violation string of an entry point).
inline std::string RequireBlas() { return BlasReady() ? std::string() : std::string(BlasDescription()); }

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major; op(X) = X^T when trans_x.
// lda/ldb/ldc are row strides of A, B, C as stored.
void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace cpu
}  // namespace mindpet

extern "C" {
// Resolve the GEMM from the shared library at `path` (Python passes MindSpore's libdnnl.so.3).
// Returns 0 on success, non-zero when the library or its sgemm symbol cannot be loaded.
__attribute__((visibility("default"))) int MindpetSetBlasLibrary(const char* path);
// The resolved library (or the reason there is none); resolves on first call.
__attribute__((visibility("default"))) const char* MindpetBlasDescription();
// Work (multiply-adds) below which a kernel call stays on one thread (for tests).
__attribute__((visibility("default"))) int64_t MindpetMinParallelMacs();
}
