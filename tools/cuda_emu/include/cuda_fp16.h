// Stand-in for <cuda_fp16.h> in the host emulation: IEEE half storage and conversions.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "cuda_runtime.h"

struct __half {
  unsigned short __x;
};
inline float __half2float(__half h) { return ::hlm::f16_bits_to_f32(h.__x); }
inline __half __float2half_rn(float f) { return __half{::hlm::f32_to_f16_bits(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
