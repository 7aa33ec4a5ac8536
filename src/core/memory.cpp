// CPU and CUDA memory behind one interface.
#include "core/memory.h"

#include <cstdlib>
#include <cstring>

#ifdef HLM_CUDA
#include <cuda_runtime.h>
#endif

namespace hlm {

namespace {
#ifdef HLM_CUDA
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorKind::Cuda, "{}: {}", what, cudaGetErrorString(e));
}
#endif
[[maybe_unused, noreturn]] void no_cuda() {
  fail(ErrorKind::Unsupported, "this hybridlm was built without CUDA (use the 'cuda' preset)");
}
}  // namespace

bool cuda_available() {
#ifdef HLM_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
#else
  return false;
#endif
}

void* device_alloc(Device device, size_t bytes) {
  if (bytes == 0) bytes = kAlignment;
  if (device == Device::CPU) {
    size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (!p) fail(ErrorKind::Io, "out of host memory allocating {} bytes", bytes);
    return p;
  }
#ifdef HLM_CUDA
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    fail(ErrorKind::Cuda, "cudaMalloc of {:.2f} MiB failed: {}", static_cast<double>(bytes) / 1048576.0,
         cudaGetErrorString(e));
  }
  return p;
#else
  no_cuda();
#endif
}

void device_free(Device device, void* p) noexcept {
  if (!p) return;
  if (device == Device::CPU) {
    std::free(p);
    return;
  }
#ifdef HLM_CUDA
  cudaFree(p);
#endif
}

void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memmove(dst, src, bytes);
    return;
  }
#ifdef HLM_CUDA
  cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
#else
  no_cuda();
#endif
}

void device_memset(void* dst, Device device, int byte, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    std::memset(dst, byte, bytes);
    return;
  }
#ifdef HLM_CUDA
  cuda_check(cudaMemset(dst, byte, bytes), "cudaMemset");
#else
  no_cuda();
#endif
}

void device_synchronize(Device device) {
  if (device == Device::CPU) return;
#ifdef HLM_CUDA
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#else
  no_cuda();
#endif
}

namespace {
// Length of the packed suffix (in elements) shared by both tensors, and the dims it covers.
int packed_suffix(const Tensor& a, const Tensor& b, int64_t* block) {
  int64_t n = 1;
  int d = a.ndim - 1;
  for (; d >= 0; --d) {
    const size_t k = static_cast<size_t>(d);
    if (a.shape[k] != 1 && (a.stride[k] != n || b.stride[k] != n)) break;
    n *= a.shape[k];
  }
  *block = n;
  return d + 1;  // dims [0, d+1) remain to iterate
}
}  // namespace

void copy_tensor(const Tensor& dst, const Tensor& src) {
  HLM_REQUIRE(dst.dtype == src.dtype && same_shape(dst, src), ErrorKind::Internal,
              "copy_tensor: {} from {}", dst.describe(), src.describe());
  if (src.numel() == 0) return;
  const size_t es = dtype_size(src.dtype);
  int64_t block = 1;
  const int outer = packed_suffix(dst, src, &block);
  if (outer == 0) {
    device_copy(dst.data, dst.device, src.data, src.device, static_cast<size_t>(block) * es);
    return;
  }
  // The innermost outer dim becomes the row count of a 2-D copy; the rest are looped.
  const size_t k = static_cast<size_t>(outer - 1);
  const int64_t rows = src.shape[k];
  int64_t count = 1;
  for (size_t d = 0; d < k; ++d) count *= src.shape[d];
  for (int64_t i = 0; i < count; ++i) {
    int64_t rem = i, so = 0, dof = 0;
    for (int d = static_cast<int>(k) - 1; d >= 0; --d) {
      const size_t u = static_cast<size_t>(d);
      const int64_t idx = rem % src.shape[u];
      rem /= src.shape[u];
      so += idx * src.stride[u];
      dof += idx * dst.stride[u];
    }
    char* dp = static_cast<char*>(dst.data) + dof * static_cast<int64_t>(es);
    const char* sp = static_cast<const char*>(src.data) + so * static_cast<int64_t>(es);
#ifdef HLM_CUDA
    if (dst.device == Device::CUDA || src.device == Device::CUDA) {
      cuda_check(cudaMemcpy2D(dp, static_cast<size_t>(dst.stride[k]) * es, sp,
                              static_cast<size_t>(src.stride[k]) * es, static_cast<size_t>(block) * es,
                              static_cast<size_t>(rows), cudaMemcpyDefault),
                 "cudaMemcpy2D");
      continue;
    }
#endif
    for (int64_t r = 0; r < rows; ++r)
      std::memmove(dp + r * dst.stride[k] * static_cast<int64_t>(es),
                   sp + r * src.stride[k] * static_cast<int64_t>(es), static_cast<size_t>(block) * es);
  }
}

Buffer::Buffer(Device device, size_t bytes)
    : data_(device_alloc(device, bytes)), size_(bytes), device_(device) {}
Buffer::~Buffer() { device_free(device_, data_); }
Buffer::Buffer(Buffer&& o) noexcept : data_(o.data_), size_(o.size_), device_(o.device_) {
  o.data_ = nullptr;
  o.size_ = 0;
}
Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    device_free(device_, data_);
    data_ = o.data_;
    size_ = o.size_;
    device_ = o.device_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}
Tensor Buffer::as(DType dtype, Shape shape) const {
  Tensor t(data_, dtype, device_, shape);
  HLM_ASSERT(t.nbytes() <= size_);
  return t;
}

size_t Arena::bytes_for(DType dtype, Shape shape) {
  size_t n = dtype_size(dtype);
  for (int64_t s : shape) n *= static_cast<size_t>(s);
  return (n + kAlignment - 1) / kAlignment * kAlignment;
}

Tensor Arena::alloc(DType dtype, Shape shape) {
  size_t bytes = bytes_for(dtype, shape);
  HLM_REQUIRE(used_ + bytes <= buffer_.size(), ErrorKind::Internal,
              "arena on {} exhausted: {} bytes used of {}, {} more asked",
              device_name(buffer_.device()), used_, buffer_.size(), bytes);
  Tensor t(static_cast<char*>(buffer_.data()) + used_, dtype, buffer_.device(), shape);
  used_ += bytes;
  return t;
}

Tensor Arena::zeros(DType dtype, Shape shape) {
  Tensor t = alloc(dtype, shape);
  device_memset(t.data, t.device, 0, t.nbytes());
  return t;
}

}  // namespace hlm
