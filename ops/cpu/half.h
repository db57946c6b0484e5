// float16 <-> float32 conversion for the CPU kernels (float16 tensors are widened, computed in float32
// and rounded once when stored). Bulk conversions use F16C when the CPU has it, OpenMP threads
// when large.
#pragma once
#include <cstdint>

namespace mindpet {
namespace cpu {

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);  // round to nearest even, saturating to inf like IEEE

void HalfToFloatN(const uint16_t* src, float* dst, int64_t n);
void FloatToHalfN(const float* src, uint16_t* dst, int64_t n);

}  // namespace cpu
}  // namespace mindpet
