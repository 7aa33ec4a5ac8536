// Decode: one token's keys / values appended to the cache at a position read on the device.
#include "ops/attention.h"
#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {
// One block per row; 16-byte copies when the row is a multiple of 16 bytes.
template <typename V>
__global__ void kv_cache_write_kernel(const char* x, int64_t x_ld_bytes, char* cache, int64_t cache_ld_bytes,
                                      int64_t S, const int32_t* len, int64_t row_bytes) {
  pdl_begin();  // PDL-launched (decode): x comes from the previous kernel
  const int64_t b = blockIdx.x;
  int64_t p = static_cast<int64_t>(len[b]) - 1;
  if (p < 0 || p >= S) return;  // out of range: nothing written (the CPU op raises)
  const V* src = reinterpret_cast<const V*>(x + b * x_ld_bytes);
  V* dst = reinterpret_cast<V*>(cache + (b * S + p) * cache_ld_bytes);
  for (int64_t i = threadIdx.x; i < row_bytes / static_cast<int64_t>(sizeof(V)); i += blockDim.x) dst[i] = src[i];
}
}  // namespace

void kv_cache_write(const Tensor& x, const Tensor& cache, const Tensor& len) {
  const char* op = "kv_cache_write";
  HLM_REQUIRE(x.ndim == 3 && cache.ndim == 4 && x.dtype == cache.dtype && x.size(0) == cache.size(0) &&
                  x.size(1) == cache.size(2) && x.size(2) == cache.size(3),
              ErrorKind::Internal, "{}: x {} does not fit cache {}", op, x.describe(), cache.describe());
  HLM_REQUIRE(len.dtype == DType::I32 && len.numel() == x.size(0) && len.device == Device::CUDA,
              ErrorKind::Internal, "{}: len {}", op, len.describe());
  const int64_t B = x.size(0), S = cache.size(1);
  const int64_t es = static_cast<int64_t>(dtype_size(x.dtype));
  RowView xr = as_rows(x, 2, "kv_cache_write x");
  RowView cr = as_rows(cache, 2, "kv_cache_write cache");
  const int64_t row_bytes = xr.cols * es;
  const bool vec = row_bytes % 16 == 0 && (xr.ld * es) % 16 == 0 && (cr.ld * es) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(xr.data) % 16 == 0 && reinterpret_cast<uintptr_t>(cr.data) % 16 == 0;
  if (B == 0) return;
  launch_pdl(vec ? kv_cache_write_kernel<int4> : kv_cache_write_kernel<char>, dim3(static_cast<unsigned>(B)),
             dim3(128), 0, static_cast<const char*>(xr.data), xr.ld * es, static_cast<char*>(cr.data), cr.ld * es, S,
             len.ptr<int32_t>(), row_bytes);
  HLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hlm::cuda
