// Warp-level tensor-core building blocks for our own kernels: mma.sync m16n8k16 (bf16 in, fp32
// accumulate), ldmatrix fragment loads from padded shared-memory tiles, cp.async, mbarriers and
// named barriers for producer / consumer warps, the launch macro and the dynamic shared-memory
// base. Under HLM_CUDA_EMU (tools/cuda_emu) the same calls run on
// the host emulation, so kernels can be checked without a GPU.
//
// Fragment conventions (PTX ISA, "Matrix Fragments for mma.m16n8k16"), lane = 4*g + q:
//   A 16x16 (row-major): a[0] = (g, 2q..2q+1), a[1] = (g+8, 2q..), a[2] = (g, 2q+8..), a[3] = (g+8, 2q+8..)
//   B 16x8 (k x n):      b[0] = (k 2q..2q+1, n g), b[1] = (k 2q+8.., n g)
//   C 16x8 fp32:         c[0] = (g, 2q), c[1] = (g, 2q+1), c[2] = (g+8, 2q), c[3] = (g+8, 2q+1)
// ldmatrix without .trans serves an operand whose K index is contiguous in shared memory; with
// .trans one whose M (or N) index is contiguous.
#pragma once

#include <cstdint>

#include "ops/cuda/common.cuh"

#ifdef HLM_CUDA_EMU
#define HLM_LAUNCH(kernel, grid, block, smem, ...) ::emu::launch(kernel, grid, block, smem, __VA_ARGS__)
#define HLM_LAUNCH_PDL(kernel, grid, block, smem, ...) ::emu::launch(kernel, grid, block, smem, __VA_ARGS__)
#else
#define HLM_LAUNCH(kernel, grid, block, smem, ...) \
  kernel<<<grid, block, smem, ::hlm::cuda::stream()>>>(__VA_ARGS__)
// For kernels that call pdl_wait() before touching what earlier kernels write (common.cuh).
#define HLM_LAUNCH_PDL(kernel, grid, block, smem, ...) \
  ::hlm::cuda::launch_pdl(kernel, dim3(grid), dim3(block), smem, __VA_ARGS__)
#endif

namespace hlm::cuda::mma {

#ifndef HLM_CUDA_EMU
// The shared-memory address (32-bit state space offset) of a generic pointer, for inline PTX.
__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
#endif

using bf16_t = __nv_bfloat16;

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) & 31; }

// Base of the block's dynamic shared memory (aligned to 128 bytes).
__device__ __forceinline__ unsigned char* dynamic_smem() {
#ifdef HLM_CUDA_EMU
  return ::emu::dynamic_smem();
#else
  extern __shared__ __align__(128) unsigned char hlm_dynamic_smem[];
  return hlm_dynamic_smem;
#endif
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}
__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// ---- raw instructions ----

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* row) {
#ifdef HLM_CUDA_EMU
  ::emu::ldmatrix(r, 4, false, row);
#else
  unsigned a = smem_u32(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
#endif
}
// stmatrix: lane l stores row l % 8 of matrix l / 8 at row (16 bytes); r[m] holds this thread's two
// elements of matrix m in the C fragment's layout (row g, columns 2q, 2q + 1), as ldsm_x4 gives them.
__device__ __forceinline__ void stsm_x4(void* row, const uint32_t (&r)[4]) {
#ifdef HLM_CUDA_EMU
  ::emu::stmatrix(row, 4, r);
#else
  unsigned a = smem_u32(row);
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(a), "r"(r[0]), "r"(r[1]),
               "r"(r[2]), "r"(r[3])
               : "memory");
#endif
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void* row) {
#ifdef HLM_CUDA_EMU
  ::emu::ldmatrix(r, 4, true, row);
#else
  unsigned a = smem_u32(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
#endif
}
__device__ __forceinline__ void ldsm_x2(uint32_t r[2], const void* row) {
#ifdef HLM_CUDA_EMU
  ::emu::ldmatrix(r, 2, false, row);
#else
  unsigned a = smem_u32(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a));
#endif
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t r[2], const void* row) {
#ifdef HLM_CUDA_EMU
  ::emu::ldmatrix(r, 2, true, row);
#else
  unsigned a = smem_u32(row);
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(a));
#endif
}

// d += a * b for one m16n8k16 tile.
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], const uint32_t b0,
                                         const uint32_t b1) {
#ifdef HLM_CUDA_EMU
  const uint32_t b[2] = {b0, b1};
  ::emu::mma_bf16_16816(d, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// kBytes (4, 8 or 16) global -> shared copy; with valid == false the bytes are zero-filled and src
// unread. 16-byte copies bypass L1 (.cg, streamed tiles); smaller ones can only go through it (.ca).
template <int kBytes>
__device__ __forceinline__ void cp_async(void* smem, const void* src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef HLM_CUDA_EMU
  ::emu::cp_async(smem, src, kBytes, !valid);
#else
  unsigned a = smem_u32(smem);
  int n = valid ? kBytes : 0;
  if constexpr (kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src), "r"(n));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(a), "l"(src), "n"(kBytes), "r"(n));
#endif
}
__device__ __forceinline__ void cp_async16(void* smem, const void* src, bool valid) { cp_async<16>(smem, src, valid); }
__device__ __forceinline__ void cp_async_commit() {
#ifdef HLM_CUDA_EMU
  ::emu::cp_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#ifdef HLM_CUDA_EMU
  ::emu::cp_wait(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// ---- producer / consumer synchronisation inside a block (sm_90) ----------------------------
//
// For warp-specialised kernels: a shared-memory mbarrier completes a phase once `count` arrivals
// have been made on it (then re-arms with the same count); waiters name the parity of the phase
// they wait for (0 first, then 1, 0, ...). mbar_init is called by one thread, followed by
// __syncthreads before any other use. cp_async_mbar_arrive is one of the count's arrivals, made
// once every cp.async this thread issued before it has landed (PTX .noinc): a producer fills a
// stage with cp.async and arrives with it; consumers wait on the stage's phase instead of a
// block barrier. Named barriers (ids 1..15; 0 is __syncthreads') synchronise a subset of the
// block: nthreads (a multiple of 32) threads arrive, those in bar_sync wait, those in bar_arrive
// do not. In the emulator the copies handed to an mbarrier land when its phase completes.
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
#ifdef HLM_CUDA_EMU
  ::emu::mbar_init(bar, count);
#else
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#ifdef HLM_CUDA_EMU
  ::emu::mbar_arrive(bar);
#else
  asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(smem_u32(bar)) : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
#ifdef HLM_CUDA_EMU
  ::emu::mbar_wait(bar, parity);
#else
  asm volatile(
      "{\n .reg .pred done;\n"
      "MBAR_WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra MBAR_WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
#endif
}
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t* bar) {
#ifdef HLM_CUDA_EMU
  ::emu::cp_async_mbar_arrive(bar);
#else
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_u32(bar)) : "memory");
#endif
}
__device__ __forceinline__ void bar_sync(int id, int nthreads) {
#ifdef HLM_CUDA_EMU
  ::emu::named_bar(id, nthreads, true);
#else
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
#endif
}
__device__ __forceinline__ void bar_arrive(int id, int nthreads) {
#ifdef HLM_CUDA_EMU
  ::emu::named_bar(id, nthreads, false);
#else
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
#endif
}

// ---- fragment loads from a bf16 tile S with row pitch ld (elements; ld*2 a multiple of 16) ----

// A (16 x 16 at m0, k0) from S[m][k].
__device__ __forceinline__ void load_a(uint32_t a[4], const bf16_t* S, int ld, int m0, int k0) {
  int l = lane_id(), mi = l >> 3, r = l & 7;
  ldsm_x4(a, S + (m0 + r + (mi & 1) * 8) * ld + k0 + (mi >> 1) * 8);
}
// A (16 x 16 at m0, k0) from S[k][m].
__device__ __forceinline__ void load_a_t(uint32_t a[4], const bf16_t* S, int ld, int m0, int k0) {
  int l = lane_id(), mi = l >> 3, r = l & 7;
  ldsm_x4_t(a, S + (k0 + r + (mi >> 1) * 8) * ld + m0 + (mi & 1) * 8);
}
// B for two n-tiles (n0..n0+15) x k16 from S[n][k]: b[0..1] = tile n0, b[2..3] = tile n0+8.
__device__ __forceinline__ void load_b2(uint32_t b[4], const bf16_t* S, int ld, int n0, int k0) {
  int l = lane_id(), mi = l >> 3, r = l & 7;
  ldsm_x4(b, S + (n0 + r + (mi >> 1) * 8) * ld + k0 + (mi & 1) * 8);
}
// B for two n-tiles from S[k][n].
__device__ __forceinline__ void load_b2_t(uint32_t b[4], const bf16_t* S, int ld, int n0, int k0) {
  int l = lane_id(), mi = l >> 3, r = l & 7;
  ldsm_x4_t(b, S + (k0 + r + (mi & 1) * 8) * ld + n0 + (mi >> 1) * 8);
}
// B for one n-tile (n0..n0+7) x k16 from S[n][k] / S[k][n].
__device__ __forceinline__ void load_b1(uint32_t b[2], const bf16_t* S, int ld, int n0, int k0) {
  int l = lane_id() & 15, mi = l >> 3, r = l & 7;
  ldsm_x2(b, S + (n0 + r) * ld + k0 + mi * 8);
}
__device__ __forceinline__ void load_b1_t(uint32_t b[2], const bf16_t* S, int ld, int n0, int k0) {
  int l = lane_id() & 15, mi = l >> 3, r = l & 7;
  ldsm_x2_t(b, S + (k0 + r + mi * 8) * ld + n0);
}

// acc[j] (j < kTiles, n-tiles at n0 + 8j) += A(16 x 16 fragment) * B(k16 x 8 kTiles), B from S[n][k]
// (kTransB = false) or S[k][n] (kTransB = true).
template <int kTiles, bool kTransB>
__device__ __forceinline__ void mma_row(float (*acc)[4], const uint32_t a[4], const bf16_t* S, int ld,
                                        int n0, int k0) {
#pragma unroll
  for (int j = 0; j + 1 < kTiles; j += 2) {
    uint32_t b[4];
    if constexpr (kTransB)
      load_b2_t(b, S, ld, n0 + 8 * j, k0);
    else
      load_b2(b, S, ld, n0 + 8 * j, k0);
    mma_bf16(acc[j], a, b[0], b[1]);
    mma_bf16(acc[j + 1], a, b[2], b[3]);
  }
  if constexpr (kTiles % 2 == 1) {
    uint32_t b[2];
    if constexpr (kTransB)
      load_b1_t(b, S, ld, n0 + 8 * (kTiles - 1), k0);
    else
      load_b1(b, S, ld, n0 + 8 * (kTiles - 1), k0);
    mma_bf16(acc[kTiles - 1], a, b[0], b[1]);
  }
}

// Row / column of accumulator element i of an m16n8 tile at (m0, n0) for this lane.
__device__ __forceinline__ int acc_row(int m0, int i) { return m0 + (lane_id() >> 2) + (i >= 2 ? 8 : 0); }
__device__ __forceinline__ int acc_col(int n0, int i) { return n0 + 2 * (lane_id() & 3) + (i & 1); }

}  // namespace hlm::cuda::mma
