// Access to the arguments of a MindSpore aot kernel on CPU:
//   extern "C" int Func(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
//                       void* stream, void* extra);
// params holds the inputs (tensors, then the scalar attributes of the contract) and then the outputs.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "export.h"
#include "half.h"

namespace mindpet {
namespace cpu {

enum class DType { kFloat32, kFloat16, kOther };

inline DType ParseDType(const char* s) {
  if (std::strcmp(s, "float32") == 0) return DType::kFloat32;
  if (std::strcmp(s, "float16") == 0) return DType::kFloat16;
  return DType::kOther;
}

// A view of the aot argument list.
class AotArgs {
 public:
  AotArgs(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes)
      : n_(nparam), params_(params), ndims_(ndims), shapes_(shapes), dtypes_(dtypes) {}

  int size() const { return n_; }
  void* data(int i) const { return params_[i]; }
  int ndim(int i) const { return ndims_[i]; }
  int64_t dim(int i, int d) const { return d < ndims_[i] ? shapes_[i][d] : 1; }
  const char* dtype_name(int i) const { return dtypes_[i]; }
  DType dtype(int i) const { return ParseDType(dtypes_[i]); }

  int64_t numel(int i) const {
    int64_t n = 1;
    for (int d = 0; d < ndims_[i]; ++d) n *= shapes_[i][d];
    return n;
  }

  // A scalar attribute passed as a 0-d (or 1-element) tensor of any numeric dtype.
  double scalar(int i) const {
    const std::string t = dtypes_[i];
    const void* p = params_[i];
    if (t == "float32") return *static_cast<const float*>(p);
    if (t == "float64") return *static_cast<const double*>(p);
    if (t == "int64") return static_cast<double>(*static_cast<const int64_t*>(p));
    if (t == "int32") return *static_cast<const int32_t*>(p);
    if (t == "bool") return *static_cast<const bool*>(p) ? 1.0 : 0.0;
    if (t == "float16") {
      uint16_t h;
      std::memcpy(&h, p, 2);
      return HalfToFloat(h);
    }
    return 0.0;
  }

 private:
  int n_;
  void** params_;
  int* ndims_;
  int64_t** shapes_;
  const char** dtypes_;
};

// Report a contract violation; the kernel returns the non-zero code to MindSpore.
inline int KernelError(const char* kernel, const std::string& message) {
  std::fprintf(stderr, "[mindpet] %s: %s\n", kernel, message.c_str());
  return 1;
}

// The body of one aot entry point: checks the rest of its contract on `args` and runs the kernel.
// Returns "" on success, else the contract violation.
using AotBody = std::string (*)(const AotArgs& args);

// Counts one call of the entry point `kernel` (MindpetKernelCalls reads the count: tests use it to
// see which kernels a compiled graph runs).
void CountCall(const char* kernel);

// Runs an aot entry point: checks the argument count, then calls `body`. A violation is reported on
// stderr under the kernel's name and MindSpore gets 1; success gives 0.
inline int RunAot(const char* kernel, int expected_params, int nparam, void** params, int* ndims, int64_t** shapes,
                  const char** dtypes, AotBody body) {
  CountCall(kernel);
  if (nparam != expected_params) return KernelError(kernel, "wrong number of arguments");
  const std::string violation = body(AotArgs(nparam, params, ndims, shapes, dtypes));
  return violation.empty() ? 0 : KernelError(kernel, violation);
}

}  // namespace cpu
}  // namespace mindpet

// Defines the exported aot entry point `name` with MindSpore's CPU aot signature (above); it runs
// `body` (an AotBody) through RunAot with `expected_params` arguments.
#define MINDPET_AOT_ENTRY(name, expected_params, body)                                                        \
  MINDPET_AOT_EXPORT int name(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,    \
                              void* /*stream*/, void* /*extra*/) {                                            \
    return mindpet::cpu::RunAot(#name, expected_params, nparam, params, ndims, shapes, dtypes, body);         \
  }
