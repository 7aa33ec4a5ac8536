// Tensor: a non-owning view (pointer, shape, strides in elements, dtype, device). Memory is owned by
// arenas or buffers; ops receive views and never allocate what they return.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace hlm {

enum class Device : uint8_t { CPU, CUDA };
const char* device_name(Device d);

constexpr int kMaxDims = 6;
using Shape = std::span<const int64_t>;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> stride{};  // in elements

  Tensor() = default;
  // A contiguous (row-major) view of `data`.
  Tensor(void* data, DType dtype, Device device, Shape shape);
  Tensor(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape)
      : Tensor(data, dtype, device, Shape(shape.begin(), shape.size())) {}

  bool defined() const { return data != nullptr; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  // Size of dimension d; negative d counts from the end.
  int64_t size(int d) const { return shape[static_cast<size_t>(d < 0 ? d + ndim : d)]; }
  int64_t step(int d) const { return stride[static_cast<size_t>(d < 0 ? d + ndim : d)]; }
  bool is_contiguous() const;

  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // Byte address of element with flat index i of a contiguous tensor.
  void* at_offset(int64_t elements) const {
    return static_cast<char*>(data) + elements * static_cast<int64_t>(dtype_size(dtype));
  }

  // Same memory, new shape; needs a contiguous tensor. One entry may be -1 (inferred).
  Tensor reshape(Shape new_shape) const;
  Tensor reshape(std::initializer_list<int64_t> s) const { return reshape(Shape(s.begin(), s.size())); }
  // Sub-range [start, start+len) of dimension dim (strides unchanged).
  Tensor slice(int dim, int64_t start, int64_t len) const;
  // Drops dimension dim at index i.
  Tensor select(int dim, int64_t i) const;
  // Splits the (packed) last dimension into `inner` dims, keeping the leading strides: turns a
  // column slice [B,T,H·P] of a wider activation into [B,T,H,P] without a copy.
  Tensor split_last(Shape inner) const;
  Tensor split_last(std::initializer_list<int64_t> s) const { return split_last(Shape(s.begin(), s.size())); }
  // Merges all but the last dimension (which must collapse to uniform rows): [B,T,C] → [B·T,C].
  Tensor rows2d() const;

  std::string shape_str() const;  // "[2,3,4]"
  std::string describe() const;   // "F32[2,3,4] on CPU"
};

bool same_shape(const Tensor& a, const Tensor& b);

// A tensor seen as a matrix of `rows` rows of `cols` contiguous elements, `ld` elements apart.
// Most ops accept any tensor whose last `inner_dims` dimensions are packed and whose leading
// dimensions collapse to one uniform row stride (e.g. a column slice of a [B,T,W] activation).
struct RowView {
  void* data;
  int64_t rows;
  int64_t cols;
  int64_t ld;
  DType dtype;
  Device device;
  template <typename T>
  T* row(int64_t r) const {
    return static_cast<T*>(data) + r * ld;
  }
};
RowView as_rows(const Tensor& t, int inner_dims, const char* what);

}  // namespace hlm
