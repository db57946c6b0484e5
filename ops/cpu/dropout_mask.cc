// dropout_mask on CPU (contract: ops/CONTRACTS.md section 10): the LoRA layers' dropout mask drawn from a
// counter hash (attention_dropout.h) of (seed, offset + i), i < N = numel(x):
//   c       = uint64(offset) + i                        (wrapping)
//   bits    = ColumnBits(RowKey(seed, c >> 12), c & 4095)
//   mask[i] = bits >= floor(p 2^24) ? 1 / (1 - p) : 0
// Every element depends on its counter only, so the mask does not depend on the tensor's shape or the thread
// split, and masks of calls whose counter ranges [offset, offset + N) do not overlap are independent.
// Forward only (no gradient). Large calls take chunks on a team (parallel.h), as the elementwise ops.
#include <cstdint>
#include <cstring>

#include "aot_args.h"
#include "attention_dropout.h"
#include "export.h"
#include "fast_math.h"
#include "half.h"
#include "mindpet/contracts.h"
#include "parallel.h"

namespace mindpet {
namespace cpu {
namespace {

constexpr int64_t kChunkElements = int64_t{1} << 16;
// out[i] = keep(counter + i) ? kept : dropped for i in [0, n), one row key per block of 4096 counters.
template <typename T>
MINDPET_INLINE void FillMask(uint64_t seed, uint64_t counter, uint32_t threshold, T kept, T dropped, T* out,
                             int64_t n) {
  dropout_bits::ForEachCounterRun(seed, counter, n, [&](int64_t i, uint64_t row_key, uint32_t j0, int64_t len) {
    T* dst = out + i;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      dst[t] = dropout_bits::ColumnBits(row_key, j0 + static_cast<uint32_t>(t)) >= threshold ? kept : dropped;
    }
  });
}

// The same loop compiled for AVX2 (8 lanes of 32-bit multiplies), chosen at run time as in the other kernels.
template <typename T>
__attribute__((target("avx2"))) void FillMaskAvx2(uint64_t seed, uint64_t counter, uint32_t threshold, T kept,
                                                  T dropped, T* out, int64_t n) {
  FillMask(seed, counter, threshold, kept, dropped, out, n);
}
template <typename T>
void FillMaskBase(uint64_t seed, uint64_t counter, uint32_t threshold, T kept, T dropped, T* out, int64_t n) {
  FillMask(seed, counter, threshold, kept, dropped, out, n);
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

template <typename T>
void Fill(uint64_t seed, uint64_t offset, uint32_t threshold, T kept, T dropped, T* out, int64_t n) {
  const auto fn = HasAvx2() ? &FillMaskAvx2<T> : &FillMaskBase<T>;
  ParallelFor(n, ElementThreads(n), kChunkElements, [&](Range r, int64_t) {
    fn(seed, offset + static_cast<uint64_t>(r.begin), threshold, kept, dropped, out + r.begin, r.size());
  });
}

bool ReadInt64(const AotArgs& args, int i, uint64_t* value) {
  if (std::strcmp(args.dtype_name(i), "int64") != 0 || args.numel(i) != 1) return false;
  int64_t v;
  std::memcpy(&v, args.data(i), sizeof(v));
  *value = static_cast<uint64_t>(v);
  return true;
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::DType;
namespace dm = mindpet::contracts::dropout_mask;

namespace {
std::string RunDropoutMask(const AotArgs& args) {
  const int mask_idx = dm::kFwdNumInputs + dm::kFwdMask;
  const int64_t n = args.numel(dm::kFwdX);
  if (args.numel(mask_idx) != n) return "mask must have the shape of x";
  const DType dtype = args.dtype(dm::kFwdX);
  if (dtype == DType::kOther || args.dtype(mask_idx) != dtype) return "x and mask must share dtype float32 or float16";
  uint64_t seed = 0, offset = 0;
  if (!mindpet::cpu::ReadInt64(args, dm::kFwdSeed, &seed)) return "seed must be int64 with 1 element";
  if (!mindpet::cpu::ReadInt64(args, dm::kFwdOffset, &offset)) return "offset must be int64 with 1 element";
  const double p = args.scalar(dm::kFwdP);
  if (!(p >= 0.0 && p < 1.0)) return "p must be in [0, 1)";
  const uint32_t threshold = mindpet::cpu::dropout_bits::Threshold(static_cast<float>(p));
  const float kept = static_cast<float>(1.0 / (1.0 - p));
  if (n == 0) return {};
  if (dtype == DType::kFloat32) {
    mindpet::cpu::Fill<float>(seed, offset, threshold, kept, 0.0f, static_cast<float*>(args.data(mask_idx)), n);
  } else {
    mindpet::cpu::Fill<uint16_t>(seed, offset, threshold, mindpet::cpu::FloatToHalf(kept), uint16_t{0},
                                 static_cast<uint16_t*>(args.data(mask_idx)), n);
  }
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(DropoutMaskForward, dm::kFwdNumInputs + dm::kFwdNumOutputs, RunDropoutMask)
