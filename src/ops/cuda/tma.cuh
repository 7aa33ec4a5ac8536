// The Hopper tensor memory accelerator (TMA, sm_90): bulk tensor copies between global and shared
// memory described by a tensor map. One thread issues a whole tile; rows and columns outside the
// tensor's dimensions are not written by a store (the hardware clips them) and read as zero by a
// load, so a partial last tile needs no masking. A load completes an mbarrier's transaction count. Under HLM_CUDA_EMU the same calls run on the host emulation (tools/cuda_emu), each
// store performed at the wait that covers it (reading shared memory then, as the hardware may).
//
// The tensor map (a CUtensorMap, 128 opaque bytes) must live in kernel-parameter, constant or
// global memory: here it is a kernel's own __grid_constant__ parameter.
#pragma once

#include <cstdint>
#include <cstring>

#ifndef HLM_CUDA_EMU
#include <cuda.h>  // CUtensorMap and cuTensorMapEncodeTiled's types only (no libcuda link: see encode)
#endif

#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda::tma {

struct alignas(128) Map {  // as CUtensorMap (the encoder needs 64)
  uint64_t opaque[16] = {};
};

#ifdef HLM_CUDA_EMU
static_assert(sizeof(::emu::TmaDesc) <= sizeof(Map), "the emulator's descriptor fits a tensor map");
#else
static_assert(sizeof(CUtensorMap) == sizeof(Map) && alignof(CUtensorMap) == alignof(Map), "a CUtensorMap");
#endif

// Host: a rank-3 bf16 tensor map (dims[0] contiguous; strides in bytes of dims 1 and 2) with box
// box[0..2] and the 128-byte swizzle: shared-memory rows of box[0] = 64 elements (128 bytes), the
// 16-byte chunk i of row r at chunk i ^ (r % 8) (the tile 1024-byte aligned). False where TMA
// cannot describe the tensor (base or strides not multiples of 16 bytes, no driver entry point).
inline bool encode_bf16_3d_sw128(Map& m, const void* base, const uint64_t (&dims)[3], const uint64_t (&strides)[2],
                                 const uint32_t (&box)[3]) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0 || strides[0] % 16 != 0 || strides[1] % 16 != 0) return false;
  if (box[0] * 2 != 128) return false;
  for (int d = 0; d < 3; ++d)
    if (dims[d] == 0 || dims[d] > (1ull << 32) || box[d] == 0 || box[d] > 256) return false;
  if (strides[0] >= (1ull << 40) || strides[1] >= (1ull << 40)) return false;
#ifdef HLM_CUDA_EMU
  ::emu::TmaDesc d{};
  d.base = const_cast<void*>(base);
  d.rank = 3;
  d.elem_bytes = 2;
  d.swizzle_bytes = 128;
  d.strides[0] = 2;
  for (int i = 0; i < 3; ++i) {
    d.dims[i] = dims[i];
    d.box[i] = box[i];
  }
  d.strides[1] = strides[0];
  d.strides[2] = strides[1];
  m = Map{};
  std::memcpy(m.opaque, &d, sizeof(d));
  return true;
#else
  // The driver's encoder through the runtime (no link against libcuda); looked up once.
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<Encode>(nullptr);
    }
    return reinterpret_cast<Encode>(fn);
  }();
  if (!encode) return false;
  const cuuint64_t gdim[3] = {dims[0], dims[1], dims[2]};
  const cuuint64_t gstride[2] = {strides[0], strides[1]};
  const cuuint32_t bdim[3] = {box[0], box[1], box[2]};
  const cuuint32_t estride[3] = {1, 1, 1};
  return encode(reinterpret_cast<CUtensorMap*>(&m), CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(base), gdim,
                gstride, bdim, estride, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
#endif
}

// Byte offset of element (r, c) of a [R][64] bf16 tile in the 128-byte swizzle above.
__device__ __forceinline__ int sw128_offset(int r, int c) {
  return r * 128 + ((((c >> 3) ^ (r & 7)) << 4) | ((c & 7) << 1));
}

// One thread: the box at coordinates (c0, c1, c2) written from the tile at smem (1024-byte
// aligned), into this thread's open bulk group. The writes of the tile by other threads must be
// ordered before it: each writer's fence.proxy.async (wg::fence_async_smem), then a barrier.
__device__ __forceinline__ void store_3d(const Map* m, const void* smem, int c0, int c1, int c2) {
#ifdef HLM_CUDA_EMU
  const int c[3] = {c0, c1, c2};
  ::emu::bulk_tensor_store(m->opaque, smem, c);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(m)),
               "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))), "r"(c0), "r"(c1), "r"(c2)
               : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // TMA needs sm_90
#endif
}
// One thread: the box at coordinates (c0, c1, c2) into the tile at smem (1024-byte aligned; box
// elements outside the tensor read as zero), completing bar's transaction count by the box's bytes
// when it has landed. The waiters on bar's phase then see the tile; the thread that made the phase
// expect the bytes (arrive_expect_tx) issues the loads after it.
__device__ __forceinline__ void load_3d(const Map* m, void* smem, uint64_t* bar, int c0, int c1, int c2) {
#ifdef HLM_CUDA_EMU
  const int c[3] = {c0, c1, c2};
  ::emu::bulk_tensor_load(m->opaque, smem, bar, c);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::
          "r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem))),
      "l"(reinterpret_cast<uint64_t>(m)), "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), "r"(c0), "r"(c1),
      "r"(c2)
      : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // TMA needs sm_90
#endif
}
// One of bar's arrivals, with the phase also waiting for `bytes` more of TMA loads to land.
__device__ __forceinline__ void arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef HLM_CUDA_EMU
  ::emu::mbar_arrive_expect_tx(bar, bytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(bytes)
               : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // TMA needs sm_90
#endif
}
// Closes this thread's open bulk group.
__device__ __forceinline__ void commit() {
#ifdef HLM_CUDA_EMU
  ::emu::bulk_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
// Until at most kPending of this thread's bulk groups are pending: kReadOnly, until they no longer
// read their shared-memory source (the tile may then be rewritten); else until their writes are
// performed. (The emulator performs a store whole at either wait.)
template <int kPending, bool kReadOnly>
__device__ __forceinline__ void wait() {
#ifdef HLM_CUDA_EMU
  ::emu::bulk_wait(kPending);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (kReadOnly)
    asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
  else
    asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

}  // namespace hlm::cuda::tma
