// Tile dequantisation of the quant_lora_linear kernels (see dequant.h). Each row segment is done in
// two passes over a buffer that stays in L1/L2: the code values v (int8 widened, or the lut looked
// up; 5-bit codes with their 5th bit), then v * scale + offset group by group. AVX2 + FMA + F16C
// versions are selected at run time.
#include "dequant.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MINDPET_DEQUANT_X86 1
#endif

#include "export.h"
#include "half.h"

namespace mindpet {
namespace cpu {
namespace {

// out[j - k0] = v(k) for k in [k0, k1) of one row.
void Values8(const int8_t* codes, int64_t k0, int64_t k1, float* out) {
  for (int64_t j = k0; j < k1; ++j) out[j - k0] = static_cast<float>(codes[j]);
}

void Values4(const uint8_t* codes, const float* lut, int64_t k0, int64_t k1, float* out) {
  for (int64_t j = k0; j < k1; ++j) out[j - k0] = lut[(codes[j >> 1] >> (4 * (j & 1))) & 0xF];
}

// 5-bit codes: the low 4 bits as Values4 in bytes [0, K/2) of the row, the 5th bit k in bit k % 8 of
// byte K/2 + k / 8 (`fifth` points there).
void Values5(const uint8_t* codes, const uint8_t* fifth, const float* lut, int64_t k0, int64_t k1, float* out) {
  for (int64_t j = k0; j < k1; ++j) {
    const int c = ((codes[j >> 1] >> (4 * (j & 1))) & 0xF) | (((fifth[j >> 3] >> (j & 7)) & 1) << 4);
    out[j - k0] = lut[c];
  }
}

void ScaleRow(const uint16_t* scales, const uint16_t* offsets, int64_t group, int64_t k0, int64_t k1, float* out) {
  for (int64_t kk = k0; kk < k1;) {
    const int64_t g = kk / group;
    const int64_t end = std::min(k1, (g + 1) * group);
    const float s = HalfToFloat(scales[g]);
    const float o = offsets != nullptr ? HalfToFloat(offsets[g]) : 0.0f;
    float* p = out + (kk - k0);
    for (int64_t j = 0; j < end - kk; ++j) p[j] = p[j] * s + o;
    kk = end;
  }
}

#ifdef MINDPET_DEQUANT_X86
#define MINDPET_AVX2 __attribute__((target("avx2,fma,f16c")))

MINDPET_AVX2 void Values8Avx2(const int8_t* codes, int64_t k0, int64_t k1, float* out) {
  int64_t j = k0;
  for (; j + 8 <= k1; j += 8) {
    const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j));
    _mm256_storeu_ps(out + (j - k0), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)));
  }
  Values8(codes, j, k1, out + (j - k0));
}

// The lut values of the 8 nibbles in the low 8 bytes of `nibbles`.
MINDPET_AVX2 inline __m256 Lookup8(__m128i nibbles, __m256 t_lo, __m256 t_hi) {
  const __m256i idx = _mm256_cvtepu8_epi32(nibbles);
  const __m256 lo = _mm256_permutevar8x32_ps(t_lo, idx);  // lut[idx & 7]
  const __m256 hi = _mm256_permutevar8x32_ps(t_hi, idx);  // lut[8 + (idx & 7)]
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));  // bit 3 selects
}

// The lut[32] values of the 8 5-bit codes: low 4 bits in the low 8 bytes of `nibbles`, 5th bits in
// bits 0..7 of `fifth`.
MINDPET_AVX2 inline __m256 Lookup8x32(__m128i nibbles, int fifth, const __m256 t[4]) {
  const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i high = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(fifth), lanes), lanes);
  const __m256i idx = _mm256_or_si256(_mm256_cvtepu8_epi32(nibbles), _mm256_and_si256(high, _mm256_set1_epi32(16)));
  const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], idx), _mm256_permutevar8x32_ps(t[1], idx), bit3);
  const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[2], idx), _mm256_permutevar8x32_ps(t[3], idx), bit3);
  return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(high));
}

MINDPET_AVX2 void Values4Avx2(const uint8_t* codes, const float* lut, int64_t k0, int64_t k1, float* out) {
  int64_t j = k0;
  if ((j & 1) != 0 && j < k1) {
    out[0] = lut[codes[j >> 1] >> 4];
    ++j;
  }
  const __m256 t_lo = _mm256_loadu_ps(lut), t_hi = _mm256_loadu_ps(lut + 8);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  for (; j + 32 <= k1; j += 32) {  // 16 bytes = 32 codes
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (j >> 1)));
    const __m128i lo = _mm_and_si128(bytes, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4);
    const __m128i first = _mm_unpacklo_epi8(lo, hi);  // codes j .. j + 15 in order
    const __m128i second = _mm_unpackhi_epi8(lo, hi);
    float* o = out + (j - k0);
    _mm256_storeu_ps(o, Lookup8(first, t_lo, t_hi));
    _mm256_storeu_ps(o + 8, Lookup8(_mm_srli_si128(first, 8), t_lo, t_hi));
    _mm256_storeu_ps(o + 16, Lookup8(second, t_lo, t_hi));
    _mm256_storeu_ps(o + 24, Lookup8(_mm_srli_si128(second, 8), t_lo, t_hi));
  }
  Values4(codes, lut, j, k1, out + (j - k0));
}

MINDPET_AVX2 void ScaleRowAvx2(const uint16_t* scales, const uint16_t* offsets, int64_t group, int64_t k0,
                               int64_t k1, float* out) {
  for (int64_t kk = k0; kk < k1;) {
    const int64_t g = kk / group;
    const int64_t end = std::min(k1, (g + 1) * group);
    const float s = _cvtsh_ss(scales[g]);
    const float o = offsets != nullptr ? _cvtsh_ss(offsets[g]) : 0.0f;
    const __m256 vs = _mm256_set1_ps(s), vo = _mm256_set1_ps(o);
    float* p = out + (kk - k0);
    const int64_t n = end - kk;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, _mm256_fmadd_ps(_mm256_loadu_ps(p + j), vs, vo));
    for (; j < n; ++j) p[j] = p[j] * s + o;
    kk = end;
  }
}

// Both passes in one when every run of 32 (4-bit) / 8 (8-bit) codes lies in one group: G a multiple
// of the run and k0 aligned to it. Returns the first k not done (the caller finishes in two passes).
MINDPET_AVX2 int64_t FusedRowAvx2(const QuantWeight& q, const uint8_t* codes, const uint16_t* scales,
                                  const uint16_t* offsets, int64_t k0, int64_t k1, float* out) {
  const int64_t run = q.bits == 8 ? 8 : 32;
  if (q.group % run != 0 || k0 % run != 0) return k0;
  const __m256 t_lo = q.bits != 8 ? _mm256_loadu_ps(q.lut) : _mm256_setzero_ps();
  const __m256 t_hi = q.bits != 8 ? _mm256_loadu_ps(q.lut + 8) : _mm256_setzero_ps();
  __m256 t32[4] = {t_lo, t_hi, _mm256_setzero_ps(), _mm256_setzero_ps()};
  if (q.bits == 5) {
    t32[2] = _mm256_loadu_ps(q.lut + 16);
    t32[3] = _mm256_loadu_ps(q.lut + 24);
  }
  const uint8_t* fifth = codes + q.k / 2;  // bits 5: the row's 5th bits
  const __m128i low4 = _mm_set1_epi8(0x0F);
  int64_t j = k0;
  for (int64_t g = k0 / q.group; j + run <= k1; ++g) {  // group g: runs up to min(k1, its end)
    const __m256 vs = _mm256_set1_ps(_cvtsh_ss(scales[g]));
    const __m256 vo = offsets != nullptr ? _mm256_set1_ps(_cvtsh_ss(offsets[g])) : _mm256_setzero_ps();
    const int64_t end = std::min(k1, (g + 1) * q.group);
    for (; j + run <= end; j += run) {
      float* o = out + (j - k0);
      if (q.bits == 8) {
        const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j));
        _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), vs, vo));
        continue;
      }
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (j >> 1)));
      const __m128i lo = _mm_and_si128(bytes, low4);
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low4);
      const __m128i first = _mm_unpacklo_epi8(lo, hi);
      const __m128i second = _mm_unpackhi_epi8(lo, hi);
      if (q.bits == 5) {
        uint32_t bits5;
        std::memcpy(&bits5, fifth + (j >> 3), 4);
        _mm256_storeu_ps(o, _mm256_fmadd_ps(Lookup8x32(first, bits5 & 0xFF, t32), vs, vo));
        _mm256_storeu_ps(o + 8,
                         _mm256_fmadd_ps(Lookup8x32(_mm_srli_si128(first, 8), (bits5 >> 8) & 0xFF, t32), vs, vo));
        _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(Lookup8x32(second, (bits5 >> 16) & 0xFF, t32), vs, vo));
        _mm256_storeu_ps(o + 24,
                         _mm256_fmadd_ps(Lookup8x32(_mm_srli_si128(second, 8), bits5 >> 24, t32), vs, vo));
        continue;
      }
      _mm256_storeu_ps(o, _mm256_fmadd_ps(Lookup8(first, t_lo, t_hi), vs, vo));
      _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(Lookup8(_mm_srli_si128(first, 8), t_lo, t_hi), vs, vo));
      _mm256_storeu_ps(o + 16, _mm256_fmadd_ps(Lookup8(second, t_lo, t_hi), vs, vo));
      _mm256_storeu_ps(o + 24, _mm256_fmadd_ps(Lookup8(_mm_srli_si128(second, 8), t_lo, t_hi), vs, vo));
    }
    if (j < end) break;  // k1 cuts this group short of a whole run: the caller finishes
  }
  return j;
}

// The AVX2 code runs when the CPU has it, unless MINDPET_DEQUANT_PORTABLE=1 (tests of the portable code).
bool HasAvx2() {
  static const bool has = [] {
    const char* env = std::getenv("MINDPET_DEQUANT_PORTABLE");
    if (env != nullptr && std::strcmp(env, "1") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return has;
}
#else
bool HasAvx2() { return false; }
void Values8Avx2(const int8_t* c, int64_t k0, int64_t k1, float* o) { Values8(c, k0, k1, o); }
void Values4Avx2(const uint8_t* c, const float* lut, int64_t k0, int64_t k1, float* o) { Values4(c, lut, k0, k1, o); }
void ScaleRowAvx2(const uint16_t* s, const uint16_t* off, int64_t g, int64_t k0, int64_t k1, float* o) {
  ScaleRow(s, off, g, k0, k1, o);
}
int64_t FusedRowAvx2(const QuantWeight&, const uint8_t*, const uint16_t*, const uint16_t*, int64_t k0, int64_t,
                     float*) {
  return k0;
}
#endif

}  // namespace

void DequantizeTile(const QuantWeight& q, int64_t n0, int64_t rows, int64_t k0, int64_t cols, float* dst,
                    int64_t ld) {
  const int64_t groups = q.k / q.group;
  const int64_t k1 = k0 + cols;
  const int64_t row_bytes = q.bits == 8 ? q.k : q.bits == 4 ? q.k / 2 : q.k / 2 + q.k / 8;
  const bool avx2 = HasAvx2();
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t n = n0 + i;
    const uint8_t* codes = q.codes + n * row_bytes;
    const uint16_t* scales = q.scales + n * groups;
    const uint16_t* offsets = q.offsets != nullptr ? q.offsets + n * groups : nullptr;
    float* out = dst + i * ld;  // out[j] is W[n, k0 + j]
    const int8_t* codes8 = reinterpret_cast<const int8_t*>(codes);
    if (avx2) {
      const int64_t done = FusedRowAvx2(q, codes, scales, offsets, k0, k1, out);
      float* rest = out + (done - k0);
      if (q.bits == 5) {
        Values5(codes, codes + q.k / 2, q.lut, done, k1, rest);
      } else {
        q.bits == 8 ? Values8Avx2(codes8, done, k1, rest) : Values4Avx2(codes, q.lut, done, k1, rest);
      }
      ScaleRowAvx2(scales, offsets, q.group, done, k1, rest);
    } else {
      if (q.bits == 5) {
        Values5(codes, codes + q.k / 2, q.lut, k0, k1, out);
      } else {
        q.bits == 8 ? Values8(codes8, k0, k1, out) : Values4(codes, q.lut, k0, k1, out);
      }
      ScaleRow(scales, offsets, q.group, k0, k1, out);
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
