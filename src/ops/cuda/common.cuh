// Shared pieces of the CUDA backend: error checks, the stream every op runs on, device properties,
// and element load/store helpers that read F32/BF16 (and F16) storage into fp32 registers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/error.h"
#include "core/tensor.h"

#define HLM_CUDA_CHECK(expr)                                                                   \
  do {                                                                                         \
    cudaError_t hlm_err_ = (expr);                                                             \
    if (hlm_err_ != cudaSuccess)                                                               \
      ::hlm::fail(::hlm::ErrorKind::Cuda, "{} failed: {} ({}:{})", #expr,                       \
                  cudaGetErrorString(hlm_err_), __FILE__, __LINE__);                           \
  } while (0)

// After every launch: catches bad launch configurations at once (asynchronous faults surface at
// the next synchronising call).
#define HLM_CUDA_CHECK_LAUNCH() HLM_CUDA_CHECK(cudaGetLastError())

namespace hlm::cuda {

// The stream all ops enqueue on (default: the legacy default stream, 0). Set by whoever captures
// graphs or overlaps work.
cudaStream_t stream();
void set_stream(cudaStream_t s);

// Properties of the current device, read once.
const cudaDeviceProp& device_props();
int num_sms();

inline unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// fp32 view of one element of F32 / BF16 / F16 storage.
template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// Calls f.template operator()<T>() with T the CUDA storage type of dtype (F32, BF16, F16).
template <typename F>
void dispatch_float(DType dtype, const char* what, F&& f) {
  switch (dtype) {
    case DType::F32: f.template operator()<float>(); break;
    case DType::BF16: f.template operator()<__nv_bfloat16>(); break;
    case DType::F16: f.template operator()<__half>(); break;
    default: fail(ErrorKind::Unsupported, "{}: dtype {} not supported on CUDA", what, dtype_name(dtype));
  }
}

}  // namespace hlm::cuda
