// Hopper warpgroup tensor-core building blocks (wgmma, sm_90a): shared-memory matrix descriptors
// for the no-swizzle ("interleave") layout, the m64nNk16 bf16 -> fp32 products with A from shared
// memory or registers, and the fences and group waits around them. Under HLM_CUDA_EMU the same
// calls run on the host emulation (tools/cuda_emu), products deferred to the group wait.
//
// Layout (CUTLASS's canonical INTERLEAVE layouts, PTX ISA "Shared Memory Matrix Layout"): a core
// matrix is 8 rows of 16 contiguous bytes (8 bf16), 128 bytes in all. For a K-major operand the
// 16 bytes run along K; for an MN-major (transposed, kTrans = 1) operand along M / N. Core matrix
// (mn / 8, k / 8) starts at  start + (mn / 8) SBO + (k / 8) LBO:  LBO steps along K, SBO along M / N.
// CoreTile below stores a [R][C] tile (C contiguous in global memory) so that one copy serves as a
// K-major operand with K = C and as an MN-major one with K = R.
//
// Accumulators (m64nN, fp32): warp w of the warpgroup holds rows 16 w .. 16 w + 15; d[4 j + i] is
// element (16 w + g + 8 (i / 2), 8 j + 2 q + i % 2), lane = 4 g + q: per 8 columns the mma.sync
// m16n8 accumulator layout, which is also the A-register fragment layout per 16 columns.
#pragma once

#include <cstdint>

#include "ops/cuda/warp_mma.cuh"

// wgmma exists on sm_90a only; other device targets compile the calls to a trap (the host picks
// the mma.sync kernels there).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HLM_WGMMA 1
#else
#define HLM_WGMMA 0
#endif

namespace hlm::cuda::wg {

using mma::bf16_t;

// Byte offset of element (r, c) of a [R][C] bf16 tile stored as core matrices, row groups of 8
// outermost: core matrix (r / 8, c / 8) at (r / 8) C 16 + (c / 8) 128.
template <int R, int C>
struct CoreTile {
  static_assert(R % 8 == 0 && C % 8 == 0, "core tiles are whole 8 x 8 matrices");
  static constexpr int kRowGroup = C * 16;  // bytes from rows 8 i to 8 (i + 1)
  static constexpr int kColGroup = 128;     // bytes from columns 8 j to 8 (j + 1)
  static constexpr int kBytes = R * C * 2;
  __device__ __forceinline__ static int offset(int r, int c) {
    return (r >> 3) * kRowGroup + (c >> 3) * kColGroup + (r & 7) * 16 + (c & 7) * 2;
  }
  // As the K-major operand (MN = rows, K = columns): LBO = column group, SBO = row group; k step
  // of 16 columns = 2 column groups.
  static constexpr uint32_t kKMajorLbo = kColGroup, kKMajorSbo = kRowGroup, kKMajorStep = 2 * kColGroup;
  // As the MN-major operand (K = rows, MN = columns): LBO = row group, SBO = column group; k step
  // of 16 rows = 2 row groups.
  static constexpr uint32_t kMnMajorLbo = kRowGroup, kMnMajorSbo = kColGroup, kMnMajorStep = 2 * kRowGroup;
};

// Shared-memory address (bytes) as the descriptors and the async proxy see it.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
#ifdef HLM_CUDA_EMU
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - ::emu::dynamic_smem());
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}

// Matrix descriptor, no swizzle: start address, LBO and SBO in 16-byte units (bits 0-13, 16-29,
// 32-45); base offset 0; layout type 0 (bits 62-63).
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_byte_addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((smem_byte_addr >> 4) & 0x3fff) |
         (static_cast<uint64_t>((lbo >> 4) & 0x3fff) << 16) | (static_cast<uint64_t>((sbo >> 4) & 0x3fff) << 32);
}
// Matrix descriptor, 128-byte swizzle (layout type 1, bits 62-63), base offset 0: the operand's
// 8-row x 128-byte atoms 1024-byte aligned (TMA's CU_TENSOR_MAP_SWIZZLE_128B tiles; element (r, c)
// of a [rows][64] bf16 atom column at tma::sw128_offset). K-major (rows = M / N, 64 K elements per
// row): SBO = the stride of 8-row groups, LBO unused; a k step within the 64 advances the start
// address by 32 bytes. MN-major (rows = K, 64 M / N elements per row): LBO = the stride between
// 64-element atom columns along M / N, SBO = the stride of 8-row groups along K (CUTLASS's
// canonical B128 layouts; PTX ISA "Matrix Descriptor Format").
__device__ __forceinline__ uint64_t make_desc_sw128(uint32_t smem_byte_addr, uint32_t lbo, uint32_t sbo) {
  return make_desc(smem_byte_addr, lbo, sbo) | (uint64_t{1} << 62);
}
// The same descriptor moved by `bytes` (a multiple of 16) along its start address.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) { return desc + (bytes >> 4); }

// Orders this thread's earlier register writes before the next wgmma reads its accumulators / A.
__device__ __forceinline__ void fence() {
#if !defined(HLM_CUDA_EMU) && HLM_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}
__device__ __forceinline__ void commit() {
#ifdef HLM_CUDA_EMU
  ::emu::wgmma_commit();
#elif HLM_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}
// Waits until at most kPending committed groups of this warpgroup are still in flight.
template <int kPending>
__device__ __forceinline__ void wait() {
#ifdef HLM_CUDA_EMU
  ::emu::wgmma_wait(kPending);
#elif HLM_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}
// Makes this thread's generic-proxy shared-memory writes (st.shared, cp.async) visible to the async
// proxy (wgmma operand reads); a barrier must still order them across threads.
__device__ __forceinline__ void fence_async_smem() {
#if !defined(HLM_CUDA_EMU) && HLM_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}
// Keeps the compiler from moving accumulator registers across the asynchronous products.
template <int kN>
__device__ __forceinline__ void pin(float (&d)[kN]) {
#ifndef HLM_CUDA_EMU
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
#endif
}

// Warp-specialised kernels: a warpgroup gives up registers (setmaxnreg.dec) or takes them
// (setmaxnreg.inc) so that producer and consumer warpgroups split the register file unevenly.
// Every warp of the warpgroup executes it; kRegs is a multiple of 8 in 24 .. 256. A no-op in the
// host emulation.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
#if !defined(HLM_CUDA_EMU) && HLM_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#elif defined(__CUDA_ARCH__)
  __trap();  // setmaxnreg needs sm_90a
#endif
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  static_assert(kRegs % 8 == 0 && kRegs >= 24 && kRegs <= 256, "setmaxnreg range");
#if !defined(HLM_CUDA_EMU) && HLM_WGMMA
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#elif defined(__CUDA_ARCH__)
  __trap();  // setmaxnreg needs sm_90a
#endif
}

// d (+)= A B over k16 (m64n64k16, fp32 accumulators), A and B from shared memory.
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_ss_n64(float (&d)[32], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
#ifdef HLM_CUDA_EMU
  ::emu::wgmma(d, 64, nullptr, desc_a, desc_b, accumulate, kTransA, kTransB);
#elif HLM_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, %35, %36;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)), "n"(kTransA), "n"(kTransB));
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}

// d (+)= A B over k16 (m64n64k16), A from registers (each warp the mma.sync A fragment of its 16
// rows), B from shared memory.
template <int kTransB>
__device__ __forceinline__ void wgmma_rs_n64(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
#ifdef HLM_CUDA_EMU
  ::emu::wgmma(d, 64, a, 0, desc_b, accumulate, 0, kTransB);
#elif HLM_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<int>(accumulate)), "n"(kTransB));
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}

// d (+)= A B over k16 (m64n128k16, fp32 accumulators), A and B from shared memory.
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
#ifdef HLM_CUDA_EMU
  ::emu::wgmma(d, 128, nullptr, desc_a, desc_b, accumulate, kTransA, kTransB);
#elif HLM_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, %67, %68;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(static_cast<int>(accumulate)), "n"(kTransA), "n"(kTransB));
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}

// d (+)= A B over k16 (m64n128k16), A from registers (each warp the mma.sync A fragment of its 16
// rows), B from shared memory.
template <int kTransB>
__device__ __forceinline__ void wgmma_rs_n128(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
#ifdef HLM_CUDA_EMU
  ::emu::wgmma(d, 128, a, 0, desc_b, accumulate, 0, kTransB);
#elif HLM_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(static_cast<int>(accumulate)), "n"(kTransB));
#elif defined(__CUDA_ARCH__)
  __trap();  // wgmma needs sm_90a
#endif
}
}  // namespace hlm::cuda::wg
