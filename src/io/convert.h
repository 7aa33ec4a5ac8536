// Element conversion between the float storage types (F32, F64, BF16, F16): what loading a bf16
// checkpoint into an fp32 arena (or saving it back) needs. Rounds to nearest even; sources may be
// unaligned (safetensors data need not be).
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace hlm {

// True when convert_elements can go from `from` to `to` (equal types always can).
bool can_convert(DType from, DType to);
// Converts n elements; large n runs on the OpenMP threads unless `threaded` is false (callers that
// already split work over threads). Throws Unsupported for other pairs.
void convert_elements(void* dst, DType dst_type, const void* src, DType src_type, int64_t n,
                      bool threaded = true);

}  // namespace hlm
