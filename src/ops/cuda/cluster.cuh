// Thread-block clusters (sm_90): a block's rank in its cluster, barrier.cluster, and arrivals on
// another block's mbarrier through its shared::cluster address (mapa). Under HLM_CUDA_EMU the same
// calls run on the host emulation (tools/cuda_emu), which runs a cluster's blocks together.
#pragma once

#include <cstdint>

#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda::cluster {

// This block's rank in its cluster.
__device__ __forceinline__ int rank() {
#ifdef HLM_CUDA_EMU
  return ::emu::cluster_rank();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return static_cast<int>(r);
#else
  return 0;
#endif
}

// Every thread of every block of the cluster: arrive (release) and wait (acquire).
__device__ __forceinline__ void sync() {
#ifdef HLM_CUDA_EMU
  ::emu::cluster_sync();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // clusters need sm_90
#endif
}

// Makes this thread's mbarrier.init visible to the cluster (before the sync() that publishes them).
__device__ __forceinline__ void fence_mbarrier_init() {
#if !defined(HLM_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// An mbarrier of block `rank` of the cluster at the offset of `local` in this block's shared memory.
struct RemoteBar {
#ifdef HLM_CUDA_EMU
  void* p;
#else
  uint32_t addr;  // shared::cluster
#endif
};
__device__ __forceinline__ RemoteBar map_bar(uint64_t* local, int rank) {
#ifdef HLM_CUDA_EMU
  return RemoteBar{::emu::map_shared_rank(local, rank)};
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t a;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(a) : "r"(mma::smem_u32(local)), "r"(rank));
  return RemoteBar{a};
#else
  return RemoteBar{0};
#endif
}
// One arrival (release, cluster scope) on that barrier.
__device__ __forceinline__ void arrive(RemoteBar b) {
#ifdef HLM_CUDA_EMU
  ::emu::mbar_arrive(b.p);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(b.addr) : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();  // clusters need sm_90
#endif
}

}  // namespace hlm::cuda::cluster
