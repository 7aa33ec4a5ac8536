// Host emulation of the CUDA execution model, to check our kernels on a machine without a GPU:
// each CUDA thread of a block is a fiber on one OS thread, blocks run one after another, warp
// collectives (shuffles, ldmatrix, mma.sync) exchange values at a warp rendezvous, cp.async copies
// land only at cp.async.wait_group, and dynamic shared memory starts poisoned (0xFF = NaN).
// The fibers of a block are scheduled in forward, reverse or random order (EMU_SCHED=fwd|rev|rand),
// so a missing __syncthreads shows up as results that change with the order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
int lane();  // linear thread index % 32

void syncthreads();
// Warp collective: copies `bytes` (<= 64) of this lane's data into its slot, waits for all lanes,
// and returns the 32 slots (64 bytes apart). Call warp_done() once the slots have been read.
const unsigned char* warp_publish(const void* data, size_t bytes);
void warp_done();

// cp.async: queued per thread; performed at cp_wait (oldest groups first).
void cp_async(void* dst_smem, const void* src, unsigned bytes, bool zero_fill);
void cp_commit();
void cp_wait(int pending);

// mbarrier (shared memory, 8 bytes): init with an arrival count; arrive; wait until the phase of
// the given parity has completed. cp_async_mbar_arrive hands this thread's outstanding cp.async
// copies to the barrier (they land when its current phase completes) and arrives. named_bar:
// bar.sync (wait) / bar.arrive (no wait) on barrier id 1..15 with nthreads participants.
void mbar_init(void* bar, unsigned count);
void mbar_arrive(void* bar);
void mbar_wait(void* bar, unsigned parity);
void cp_async_mbar_arrive(void* bar);
void named_bar(int id, int nthreads, bool wait);

unsigned char* dynamic_smem();
size_t dynamic_smem_size();
// Aborts with a message unless [p, p+bytes) lies in this block's dynamic shared memory.
void check_smem(const void* p, size_t bytes, const char* what);

void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);
int last_error();
void set_error(int e);

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, Args... args) {
  std::function<void()> body = [=]() { kernel(args...); };
  run_grid(grid, block, smem, body);
}

// Warp-collective operations behind ops/cuda/warp_mma.cuh.
void ldmatrix(uint32_t* out, int nmat, bool trans, const void* row_ptr);
// stmatrix (no .trans): lane l < 8 nmat stores row l % 8 of matrix l / 8 (16 bytes) at row_ptr.
void stmatrix(void* row_ptr, int nmat, const uint32_t* in);
void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]);

// Warpgroup MMA (ops/cuda/wgmma.cuh): m64nNk16 bf16 -> fp32, A from the shared-memory descriptor
// desc_a or (a_regs != null) from this warp's A fragment (gathered at issue, a warp collective);
// B from desc_b. Committed groups are collective: the first thread of the warpgroup to wait on a
// group waits until all 128 threads have committed it, then performs every thread's products,
// reading shared memory at that moment (between issue and wait, as the hardware may); each
// thread's d must stay valid until then.
void wgmma(float* d, int n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, bool accumulate,
           int trans_a, int trans_b);
void wgmma_commit();
void wgmma_wait(int pending);

// Bulk tensor stores (ops/cuda/tma.cuh): the emulator's tensor map (in place of a CUtensorMap's
// opaque bytes). A store is queued in this thread's open bulk group and performed at the
// bulk_wait that covers it (reading shared memory then): elements outside dims are skipped; the
// 128-byte swizzle XORs address bits 4-6 with bits 7-9 (shared-memory offsets from the dynamic
// base, the tile 1024-byte aligned).
struct TmaDesc {
  void* base;
  uint64_t dims[5];
  uint64_t strides[5];  // bytes; strides[0] = the element size
  uint32_t box[5];
  int rank, elem_bytes, swizzle_bytes;
};
void bulk_tensor_store(const void* desc, const void* smem, const int* coords);
// Bulk tensor load into shared memory, completing bytes of bar's transaction count: it lands when
// bar's phase completes (all arrivals made and as many bytes loaded as arrive_expect_tx announced),
// reading global memory then; elements outside dims read as zero, the swizzle as for stores.
void bulk_tensor_load(const void* desc, void* smem, void* bar, const int* coords);
void mbar_arrive_expect_tx(void* bar, unsigned bytes);
void bulk_commit();
void bulk_wait(int pending);

}  // namespace emu
