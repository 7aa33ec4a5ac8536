// Element types, their sizes and names, and bit-exact bf16 / fp16 conversion usable on host and device.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "core/macros.h"

namespace hlm {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U16, U8, I8, I16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: F32, F64, BF16, F16, I32, ...
// Parses the safetensors spelling; returns false for an unknown name.
bool dtype_from_name(std::string_view name, DType* out);
inline bool is_float(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

HLM_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
HLM_HD float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept quiet (what torch and CUDA's __float2bfloat16 do).
HLM_HD uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
HLM_HD float bf16_bits_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

// IEEE half, round to nearest even, with subnormals, infinities and NaN.
HLM_HD float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return f32_from_bits(sign);
    // subnormal: value = man * 2^-24
    float v = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (man << 13));
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}
HLM_HD uint16_t f32_to_f16_bits(float f) {
  uint32_t u = f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {                                              // subnormal or zero
    // value in units of 2^-24, rounded to nearest even
    float a = f32_from_bits(abs) * 16777216.0f;
    uint32_t r = static_cast<uint32_t>(a);
    float frac = a - static_cast<float>(r);
    if (frac > 0.5f || (frac == 0.5f && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t mant_round = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((mant_round - 0x38000000u) >> 13));
}

// Storage type for bf16 on the host: a bit pattern with explicit conversions.
struct bf16 {
  uint16_t bits;
  bf16() = default;
  HLM_HD explicit bf16(float f) : bits(f32_to_bf16_bits(f)) {}
  HLM_HD explicit operator float() const { return bf16_bits_to_f32(bits); }
};

}  // namespace hlm
