// Counter-based dropout bits, shared by attention_masked (ops/CONTRACTS.md section 9b) and dropout_mask
// (section 10): a hash of (seed, row, j), so a mask is regenerated from the seed alone (attention's
// backward) and the result does not depend on the thread split. Per row one 64-bit key, per column j a
// 32-bit hash (vectorisable):
//   row  = Mix64(seed + (row_index + 1) * 0x9E3779B97F4A7C15)
//   bits = Mix32(lo32(row) ^ Mix32(j + hi32(row))) >> 8          (24 bits, uniform on [0, 2^24))
//   keep = bits >= floor(p * 2^24);  kept values are scaled by 1 / (1 - p)
// attention_masked: row_index = (b * NH + h) * L + i, j = key index. dropout_mask and lora_linear's hashed
// mask: counter c = offset + i, row_index = c >> 12, j = c & 4095 (ForEachCounterRun).
#pragma once
#include <cstdint>

namespace mindpet {
namespace cpu {
namespace dropout_bits {

// splitmix64's finaliser.
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// A 32-bit integer finaliser ("lowbias32").
inline uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352DU;
  x ^= x >> 15;
  x *= 0x846CA68BU;
  return x ^ (x >> 16);
}

// The key of row `row_index`.
inline uint64_t RowKey(uint64_t seed, int64_t row_index) {
  return Mix64(seed + (static_cast<uint64_t>(row_index) + 1) * 0x9E3779B97F4A7C15ULL);
}

// The keep threshold of dropout probability p in [0, 1).
inline uint32_t Threshold(float p) { return static_cast<uint32_t>(static_cast<double>(p) * 16777216.0); }

// The 24 dropout bits of column j of the row with key `row_key`.
inline uint32_t ColumnBits(uint64_t row_key, uint32_t j) {
  const uint32_t lo = static_cast<uint32_t>(row_key), hi = static_cast<uint32_t>(row_key >> 32);
  return Mix32(lo ^ Mix32(j + hi)) >> 8;
}

// row[j] *= (bits(j) >= threshold ? keep_scale : 0) for j in [0, n).
inline void ApplyRow(uint64_t row_key, uint32_t threshold, float keep_scale, float* row, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    row[j] *= ColumnBits(row_key, static_cast<uint32_t>(j)) >= threshold ? keep_scale : 0.0f;
  }
}

// Counters per row key in the counter form (dropout_mask, lora_linear's hashed mask): 4096.
constexpr int kCounterBlockBits = 12;
constexpr uint64_t kCounterBlockMask = (uint64_t{1} << kCounterBlockBits) - 1;

// Walks counters [counter, counter + n) (wrapping) in runs that share a row key:
// fn(i, row_key, j0, len) for elements i .. i + len - 1, whose columns are j0 .. j0 + len - 1.
template <typename Fn>
inline void ForEachCounterRun(uint64_t seed, uint64_t counter, int64_t n, Fn&& fn) {
  int64_t i = 0;
  while (i < n) {
    const uint64_t c = counter + static_cast<uint64_t>(i);
    const uint64_t row_key = RowKey(seed, static_cast<int64_t>(c >> kCounterBlockBits));
    const uint32_t j0 = static_cast<uint32_t>(c & kCounterBlockMask);
    int64_t len = static_cast<int64_t>(kCounterBlockMask + 1 - j0);
    if (len > n - i) len = n - i;
    fn(i, row_key, j0, len);
    i += len;
  }
}

}  // namespace dropout_bits
}  // namespace cpu
}  // namespace mindpet
