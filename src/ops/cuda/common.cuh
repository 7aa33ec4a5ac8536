// Shared pieces of the CUDA backend: error checks, the stream every op runs on, device properties,
// and element load/store helpers that read F32/BF16 (and F16) storage into fp32 registers.
#pragma once

#include <initializer_list>
#include <utility>

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

// ---- Additions for the library-backed and reduction ops (cuda-core) ----------------------------

// Status checks for cuBLAS(Lt) and cuDNN calls; the message names the call. Include the library
// header (ops/cuda/handles.cuh) where these are used.
#define HLM_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                         \
    cublasStatus_t hlm_st_ = (expr);                                                           \
    if (hlm_st_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::hlm::fail(::hlm::ErrorKind::Cuda, "{} failed: {} ({}:{})", #expr,                       \
                  cublasGetStatusString(hlm_st_), __FILE__, __LINE__);                         \
  } while (0)

#define HLM_CUDNN_CHECK(expr)                                                                  \
  do {                                                                                         \
    cudnnStatus_t hlm_st_ = (expr);                                                            \
    if (hlm_st_ != CUDNN_STATUS_SUCCESS)                                                       \
      ::hlm::fail(::hlm::ErrorKind::Cuda, "{} failed: {} ({}:{})", #expr,                       \
                  ::hlm::cuda::cudnn_error_text(hlm_st_), __FILE__, __LINE__);                 \
  } while (0)

namespace hlm::cuda {

// Deterministic mode (default on; HLM_DETERMINISTIC=0 in the environment turns it off, read on
// every call until set_deterministic() fixes it): ops that have a faster non-deterministic path
// (cuDNN's attention backward accumulates dQ with float atomics) take the deterministic one.
bool deterministic();
void set_deterministic(bool on);

// Scratch memory that ops keep between calls: one grow-only device buffer per slot, so hot paths
// allocate only the first time a size is seen. Ops are ordered on stream(), so one slot may be
// reused by consecutive ops; within one op, distinct temporaries use distinct slots.
enum class Scratch : int {
  GemmWorkspace,  // cuBLASLt workspace (32 MiB)
  CudnnWorkspace,  // cuDNN execution-plan workspace
  Attn0,          // attention temporaries (lse / softmax-sum / dQ accumulators / doc segments)
  Attn1,
  Attn2,
  Attn3,
  Reduce,  // per-block partial sums of the deterministic reductions
  Sort,    // embedding backward: sort keys, values and CUB temporary storage
  Misc,
  Count
};
void* scratch(Scratch slot, size_t bytes);
// Frees every scratch slot (after waiting for the device): between jobs of different sizes, so a
// large workspace one needed does not stay allocated for the next (ops/graph.h exports it).
void release_scratch();
// Counts reallocations of memory that ops keep between calls (scratch slots, op-local workspaces).
// A recorded CUDA graph holds the old addresses: OpGraph re-records when this count moved.
uint64_t memory_generation();
void note_reallocation();
template <typename T>
T* scratch_as(Scratch slot, size_t count) {
  return static_cast<T*>(scratch(slot, count * sizeof(T)));
}

// Page-locked host staging buffer (grow-only, one per slot index) for small host<->device
// transfers that must be asynchronous; the caller synchronises before reusing it.
void* pinned_host(int slot, size_t bytes);

// Device-side error reporting for ops whose inputs carry indices (token ids, targets): kernels
// record the first bad (position, value) in a device word; check_index_flag() reads it back
// (synchronising the stream, skipped while the stream is being captured into a graph) and throws
// InvalidArgument with the message `what`: "... {value} at position {position} ...".
unsigned long long* index_flag();
// what: a format string with two {} (value, position) and the upper bound appended.
void check_index_flag(const char* op, const char* what, int64_t bound);
__device__ __forceinline__ void report_bad_index(unsigned long long* flag, int64_t pos, int32_t value) {
  unsigned long long code =
      (static_cast<unsigned long long>(pos + 1) << 32) | static_cast<uint32_t>(value);
  atomicCAS(flag, 0ull, code);
}
bool stream_capturing();

const char* cudnn_error_text(int status);

// Largest power of two (up to 256) dividing the address: the alignment cuBLASLt and vector
// loads may assume.
inline int pointer_alignment(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  int al = 1;
  while (al < 256 && (a % static_cast<uintptr_t>(al * 2)) == 0) al *= 2;
  return al;
}

// Whether matrices of `cols` elements of dtype per row, given as (base, row stride in elements),
// are rows of whole 16-byte vectors at 16-byte aligned addresses: the vector kernels' condition.
inline bool vec16_rows(DType dtype, int64_t cols, std::initializer_list<std::pair<const void*, int64_t>> mats) {
  const int64_t esz = static_cast<int64_t>(dtype_size(dtype));
  if (cols <= 0 || (cols * esz) % 16 != 0) return false;
  for (auto [p, ld] : mats)
    if (pointer_alignment(p) < 16 || (ld * esz) % 16 != 0) return false;
  return true;
}

// 16-byte vectors of storage elements (8 bf16 / 8 f16 / 4 f32).
template <typename T>
struct Vec16 {
  static constexpr int N = 16 / static_cast<int>(sizeof(T));
};

template <typename T>
__device__ __forceinline__ void load16(const T* p, float (&out)[Vec16<T>::N]) {
  uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec16<T>::N; ++i) out[i] = to_f32(e[i]);
}
template <typename T>
__device__ __forceinline__ void store16(T* p, const float (&in)[Vec16<T>::N]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec16<T>::N; ++i) e[i] = from_f32<T>(in[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// 16 bytes read once (weights, a KV cache): non-coherent and not kept in L1, so the L1 serves the
// data that is re-read. The pointer must be 16-byte aligned and the memory unchanged by the kernel.
__device__ __forceinline__ uint4 load_stream16(const void* p) {
#ifdef HLM_CUDA_EMU
  return *static_cast<const uint4*>(p);
#else
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
#endif
}

// 16 bytes to global memory as one 128-bit store. A uint4 assigned through a pointer is a struct
// copy that the compiler may split into four 32-bit stores (it did for a uint4 held in an array:
// four times the store instructions, each holding its source register until the data left).
// The pointer must be 16-byte aligned.
__device__ __forceinline__ void store16(void* p, const uint4& v) {
#ifdef HLM_CUDA_EMU
  *static_cast<uint4*>(p) = v;
#else
  asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
#endif
}

// ---- Programmatic dependent launch (PDL, sm_90) -----------------------------------------------
// A kernel launched with HLM_LAUNCH_PDL (warp_mma.cuh) may start while the kernel before it on the
// stream is still running. Such a kernel calls pdl_begin() before it reads anything an earlier
// kernel wrote or writes anything at all; before that it may only read memory no kernel of the
// stream changes (weights). pdl_begin() first lets the next PDL kernel launch (once every block of
// this one has reached it), then waits for the previous kernel to complete. Waits chain: the
// previous kernel completes only after its own wait, so once pdl_begin() returns every earlier
// kernel has completed. The early release lets a small kernel's successor start while the kernel
// before the small one drains: a GEMV launched so requests its first weight chunks during that
// drain instead of after the small kernel. The successor's blocks take only the slots left free:
// it launches after every block of this kernel is resident, and this kernel's launch came after
// every block of the previous one was. No-ops for a plain launch and below sm_90. pdl_wait()
// alone: the wait without the release.
__device__ __forceinline__ void pdl_wait() {
#if !defined(HLM_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_begin() {
#if !defined(HLM_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  pdl_wait();
}
// Whether HLM_LAUNCH_PDL sets the launch attribute: a device of compute capability 9.0 or later
// and HLM_PDL not 0 in the environment (read once).
bool pdl_enabled();

#ifndef HLM_CUDA_EMU
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  HLM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}
#endif

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. The order is fixed: bitwise reproducible.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float block_sum(float v, float* shared32) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // shared32 may still be read by a previous call
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? shared32[lane] : 0.0f;
  return warp_sum(t);
}
__device__ __forceinline__ float block_max(float v, float* shared32) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? shared32[lane] : -INFINITY;
  return warp_max(t);
}

// Checks shared by the ops: device, dtype, shape.
void require_cuda(const Tensor& t, const char* op, const char* name);
void require_dtype(const Tensor& t, DType dtype, const char* op, const char* name);
// One of the float storage dtypes CUDA kernels read (F32, BF16, F16).
void require_float(const Tensor& t, const char* op, const char* name);
// Contiguous I32 tensor of n entries on the device.
void require_index(const Tensor& t, int64_t n, const char* op, const char* name);

}  // namespace hlm::cuda
