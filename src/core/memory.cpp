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

void copy_tensor(const Tensor& dst, const Tensor& src) {
  HLM_REQUIRE(dst.dtype == src.dtype && dst.numel() == src.numel(), ErrorKind::Internal,
              "copy_tensor: {} from {}", dst.describe(), src.describe());
  if (src.numel() == 0) return;
  if (dst.is_contiguous() && src.is_contiguous()) {
    device_copy(dst.data, dst.device, src.data, src.device, src.nbytes());
    return;
  }
  RowView d = as_rows(dst, 1, "copy_tensor dst");
  RowView s = as_rows(src, 1, "copy_tensor src");
  HLM_ASSERT(d.rows == s.rows && d.cols == s.cols);
  size_t es = dtype_size(src.dtype);
#ifdef HLM_CUDA
  if (dst.device == Device::CUDA || src.device == Device::CUDA) {
    cuda_check(cudaMemcpy2D(d.data, static_cast<size_t>(d.ld) * es, s.data,
                            static_cast<size_t>(s.ld) * es, static_cast<size_t>(s.cols) * es,
                            static_cast<size_t>(s.rows), cudaMemcpyDefault),
               "cudaMemcpy2D");
    return;
  }
#endif
  for (int64_t r = 0; r < s.rows; ++r)
    device_copy(static_cast<char*>(d.data) + static_cast<size_t>(r * d.ld) * es, dst.device,
                static_cast<const char*>(s.data) + static_cast<size_t>(r * s.ld) * es, src.device,
                static_cast<size_t>(s.cols) * es);
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
