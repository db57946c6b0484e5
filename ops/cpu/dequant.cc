// Tile dequantisation of the quant_lora_linear kernels (see dequant.h).
#include "dequant.h"

#include <algorithm>

#include "export.h"
#include "half.h"

namespace mindpet {
namespace cpu {
namespace {

// One row segment [k0, k1) of row n of an 8-bit W, all in group g.
inline void Dequant8(const int8_t* codes, float s, float o, int64_t k0, int64_t k1, float* dst) {
  for (int64_t j = k0; j < k1; ++j) dst[j - k0] = static_cast<float>(codes[j]) * s + o;
}

// One row segment [k0, k1) of a 4-bit W through `table[c] = lut[c] * s + o`.
inline void Dequant4(const uint8_t* codes, const float* table, int64_t k0, int64_t k1, float* dst) {
  int64_t j = k0;
  if ((j & 1) != 0 && j < k1) {
    dst[0] = table[codes[j >> 1] >> 4];
    ++j;
  }
  for (; j + 1 < k1; j += 2) {
    const uint8_t byte = codes[j >> 1];
    dst[j - k0] = table[byte & 0xF];
    dst[j + 1 - k0] = table[byte >> 4];
  }
  if (j < k1) dst[j - k0] = table[codes[j >> 1] & 0xF];
}

}  // namespace

void DequantizeTile(const QuantWeight& q, int64_t n0, int64_t rows, int64_t k0, int64_t cols, float* dst,
                    int64_t ld) {
  const int64_t groups = q.k / q.group;
  const int64_t k_end = k0 + cols;
  const int64_t row_bytes = q.bits == 4 ? q.k / 2 : q.k;
  float table[16];
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t n = n0 + i;
    const uint8_t* codes = q.codes + n * row_bytes;
    const uint16_t* scales = q.scales + n * groups;
    const uint16_t* offsets = q.offsets != nullptr ? q.offsets + n * groups : nullptr;
    float* out = dst + i * ld - k0;  // out[k] is W[n, k]
    for (int64_t kk = k0; kk < k_end;) {
      const int64_t g = kk / q.group;
      const int64_t seg_end = std::min(k_end, (g + 1) * q.group);
      const float s = HalfToFloat(scales[g]);
      const float o = offsets != nullptr ? HalfToFloat(offsets[g]) : 0.0f;
      if (q.bits == 8) {
        Dequant8(reinterpret_cast<const int8_t*>(codes), s, o, kk, seg_end, out + kk);
      } else {
        for (int c = 0; c < 16; ++c) table[c] = q.lut[c] * s + o;
        Dequant4(codes, table, kk, seg_end, out + kk);
      }
      kk = seg_end;
    }
  }
}

WorkspaceMeter& QuantWorkspace() {
  static WorkspaceMeter meter;
  return meter;
}

}  // namespace cpu
}  // namespace mindpet

// Peak dequantisation workspace (bytes) of the last quant_lora_linear kernel call (for tests).
MINDPET_AOT_EXPORT int64_t MindpetQuantWorkspaceBytes() { return mindpet::cpu::QuantWorkspace().peak(); }
