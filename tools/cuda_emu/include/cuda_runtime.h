// Stand-in for <cuda_runtime.h> in the host emulation (tools/cuda_emu): the types, launch-free
// runtime calls and device built-ins our kernels use, mapped onto emu_runtime.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../emu_runtime.h"

#define HLM_CUDA_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __grid_constant__
// Blocks run one at a time, so a function-static variable is exactly block-shared memory.
#define __shared__ static

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

typedef int cudaError_t;
enum : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case 0: return "no error";
    case 1: return "invalid argument";
    case 2: return "out of memory";
    case 9: return "invalid configuration argument";
    default: return "unknown error";
  }
}
typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
  char name[256];
  int major, minor;
  int multiProcessorCount;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  size_t sharedMemPerMultiprocessor;
  int l2CacheSize;
  int maxThreadsPerMultiProcessor;
  int regsPerMultiprocessor;
};
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof(*p));
  std::strcpy(p->name, "emulated H200");
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->sharedMemPerBlock = 49152;
  p->sharedMemPerBlockOptin = 232448;
  p->sharedMemPerMultiprocessor = 233472;
  p->l2CacheSize = 50331648;
  p->maxThreadsPerMultiProcessor = 2048;
  p->regsPerMultiprocessor = 65536;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() { return ::emu::last_error(); }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { std::memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { std::memset(d, v, n); return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int value) {
  return value <= 232448 ? cudaSuccess : cudaErrorInvalidValue;
}

// Device built-ins.
inline void __syncthreads() { ::emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::emu::warp_done(); }
inline void __threadfence() {}
inline void __threadfence_block() {}

namespace emu_detail {
template <typename T>
T shfl_from(T v, int src_lane_fn_kind, int arg, int width) {
  static_assert(sizeof(T) <= 16, "shuffle of a large type");
  const unsigned char* s = ::emu::warp_publish(&v, sizeof(T));
  int l = ::emu::lane();
  int base = l & ~(width - 1);
  int src = l;
  switch (src_lane_fn_kind) {
    case 0: src = base + (arg & (width - 1)); break;                   // idx
    case 1: src = l ^ arg; if (src < base || src >= base + width) src = l; break;  // xor
    case 2: src = l - arg; if (src < base) src = l; break;             // up
    case 3: src = l + arg; if (src >= base + width) src = l; break;    // down
  }
  T r;
  std::memcpy(&r, s + src * 64, sizeof(T));
  ::emu::warp_done();
  return r;
}
inline void check_mask(unsigned m) {
  if (m != 0xffffffffu) { std::fputs("emu: partial shuffle masks are not emulated\n", stderr); std::abort(); }
}
}  // namespace emu_detail
template <typename T> T __shfl_sync(unsigned m, T v, int src, int width = 32) { emu_detail::check_mask(m); return emu_detail::shfl_from(v, 0, src, width); }
template <typename T> T __shfl_xor_sync(unsigned m, T v, int x, int width = 32) { emu_detail::check_mask(m); return emu_detail::shfl_from(v, 1, x, width); }
template <typename T> T __shfl_up_sync(unsigned m, T v, unsigned d, int width = 32) { emu_detail::check_mask(m); return emu_detail::shfl_from(v, 2, static_cast<int>(d), width); }
template <typename T> T __shfl_down_sync(unsigned m, T v, unsigned d, int width = 32) { emu_detail::check_mask(m); return emu_detail::shfl_from(v, 3, static_cast<int>(d), width); }

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
template <typename T> T __ldg(const T* p) { return *p; }

// CUDA's global min / max overloads for device code.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

// Fibers are not preemptive: read-modify-write built-ins are atomic as plain code.
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
  unsigned long long old = *p;
  if (old == cmp) *p = v;
  return old;
}
inline int atomicCAS(int* p, int cmp, int v) {
  int old = *p;
  if (old == cmp) *p = v;
  return old;
}
