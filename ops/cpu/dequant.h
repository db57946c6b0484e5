// Dequantisation of tiles of a quantised weight W [N, K] (layout: ops/CONTRACTS.md section 6) into
// float32 buffers, for the quant_lora_linear kernels: a tile is dequantised right before the GEMM
// that reads it, so the whole float32 W never exists.
#pragma once
#include <atomic>
#include <cstdint>

namespace mindpet {
namespace cpu {

// A view of the quantised W [N, K]: W[n, k] = v(n, k) * scales[n, k / G] + offsets[n, k / G],
// v = int8 codes[n, k] (bits 8), lut[nibble k of codes row n] (bits 4, element 2j in the low
// nibble of byte j) or lut[that nibble | 16 * bit k % 8 of byte K/2 + k/8 of the row] (bits 5: a row
// is K/2 + K/8 bytes). Scales and offsets are float16 bit patterns.
struct QuantWeight {
  int64_t n = 0, k = 0, group = 1;
  int bits = 8;
  const uint8_t* codes = nullptr;     // [N, K] int8 bits (8), [N, K / 2] (4), [N, K / 2 + K / 8] (5)
  const uint16_t* scales = nullptr;   // [N, K / G]
  const uint16_t* offsets = nullptr;  // [N, K / G] or null
  const float* lut = nullptr;         // [16] (bits 4) / [32] (bits 5)
};

// dst[i * ld + j] = W[n0 + i, k0 + j] for i < rows, j < cols (float32 arithmetic: v * scale + offset).
void DequantizeTile(const QuantWeight& q, int64_t n0, int64_t rows, int64_t k0, int64_t cols, float* dst,
                    int64_t ld);

// Peak bytes of dequantisation workspace held at once during a kernel call, for tests: a call
// resets it, each buffer is added while alive (WorkspaceScope), and the call's peak is kept.
class WorkspaceMeter {
 public:
  void Reset() {
    current_.store(0);
    peak_.store(0);
  }
  void Add(int64_t bytes) {
    const int64_t now = current_.fetch_add(bytes) + bytes;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
  }
  void Remove(int64_t bytes) { current_.fetch_sub(bytes); }
  int64_t peak() const { return peak_.load(); }

 private:
  std::atomic<int64_t> current_{0};
  std::atomic<int64_t> peak_{0};
};

// The meter of the quant_lora_linear kernels (MindpetQuantWorkspaceBytes reads its peak).
WorkspaceMeter& QuantWorkspace();

}  // namespace cpu
}  // namespace mindpet
