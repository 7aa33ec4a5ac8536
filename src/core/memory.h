// Device memory: allocation, copies and fills for CPU and CUDA behind one interface, an owning
// Buffer, and an Arena that carves tensors out of one allocation.
#pragma once

#include <cstddef>
#include <vector>

#include "core/tensor.h"

namespace hlm {

constexpr size_t kAlignment = 256;

// True when hybridlm was built with CUDA and a CUDA device is usable now.
bool cuda_available();
// Raw memory; throws Error on failure. Alignment is kAlignment.
void* device_alloc(Device device, size_t bytes);
void device_free(Device device, void* p) noexcept;
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void device_memset(void* dst, Device device, int byte, size_t bytes);
// Waits for all queued device work (no-op on the CPU).
void device_synchronize(Device device);

// Copies between tensors of the same dtype and shape (any device), contiguous or row views.
void copy_tensor(const Tensor& dst, const Tensor& src);
// Copies a tensor into a new host vector of its element type.
template <typename T>
std::vector<T> to_host(const Tensor& t) {
  HLM_ASSERT(dtype_size(t.dtype) == sizeof(T));
  std::vector<T> out(static_cast<size_t>(t.numel()));
  Tensor dst(out.data(), t.dtype, Device::CPU, Shape(t.shape.data(), static_cast<size_t>(t.ndim)));
  copy_tensor(dst, t);
  return out;
}

// An owning, aligned, move-only allocation.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Device device, size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  Device device() const { return device_; }
  // A contiguous tensor over the start of the buffer.
  Tensor as(DType dtype, Shape shape) const;
  Tensor as(DType dtype, std::initializer_list<int64_t> s) const {
    return as(dtype, Shape(s.begin(), s.size()));
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  Device device_ = Device::CPU;
};

// Bump allocator over one Buffer: tensors are carved in order and released all at once.
class Arena {
 public:
  Arena() = default;
  Arena(Device device, size_t capacity) : buffer_(device, capacity) {}
  static size_t bytes_for(DType dtype, Shape shape);
  static size_t bytes_for(DType dtype, std::initializer_list<int64_t> s) {
    return bytes_for(dtype, Shape(s.begin(), s.size()));
  }

  Tensor alloc(DType dtype, Shape shape);
  Tensor alloc(DType dtype, std::initializer_list<int64_t> s) {
    return alloc(dtype, Shape(s.begin(), s.size()));
  }
  // Like alloc, zero-filled.
  Tensor zeros(DType dtype, Shape shape);
  Tensor zeros(DType dtype, std::initializer_list<int64_t> s) {
    return zeros(dtype, Shape(s.begin(), s.size()));
  }
  void reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t capacity() const { return buffer_.size(); }
  Device device() const { return buffer_.device(); }
  void* base() const { return buffer_.data(); }
  // Marks used bytes so far; release_to(mark) frees everything allocated after it.
  size_t mark() const { return used_; }
  void release_to(size_t mark) { used_ = mark; }

 private:
  Buffer buffer_;
  size_t used_ = 0;
};

}  // namespace hlm
