// Helpers for the CUDA-vs-CPU op tests.
#include "cuda/cuda_test_util.h"

#include <cstring>

namespace hlm::test {

namespace {
std::vector<int64_t> shape_of(const Tensor& t) {
  return std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim);
}
}  // namespace

DeviceTensor::DeviceTensor(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  buf = Buffer(Device::CUDA, static_cast<size_t>(std::max<int64_t>(n, 1)) * dtype_size(dtype));
  t = buf.as(dtype, Shape(shape.data(), shape.size()));
}

HostTensor convert_host(const HostTensor& h, DType dtype) {
  HostTensor out(dtype, shape_of(h.t));
  for (int64_t i = 0; i < h.t.numel(); ++i) out.set(i, h.get(i));
  return out;
}

void round_to_bf16(HostTensor& h) {
  for (int64_t i = 0; i < h.t.numel(); ++i)
    h.set(i, static_cast<double>(bf16_bits_to_f32(f32_to_bf16_bits(static_cast<float>(h.get(i))))));
}

DeviceTensor upload(const HostTensor& h, DType dtype) {
  HostTensor c = convert_host(h, dtype);
  DeviceTensor d(dtype, shape_of(h.t));
  device_copy(d.t.data, Device::CUDA, c.t.data, Device::CPU, c.t.nbytes());
  return d;
}

void upload_into(const Tensor& t, const HostTensor& h) {
  HostTensor c = convert_host(h, t.dtype);
  Tensor src = c.t;
  copy_tensor(t, src.reshape(Shape(t.shape.data(), static_cast<size_t>(t.ndim))));
}

HostTensor download(const Tensor& t) {
  HostTensor h(t.dtype, shape_of(t));
  copy_tensor(h.t, t);
  return h;
}

void poison(const Tensor& t) {
  if (t.is_contiguous()) {
    device_memset(t.data, t.device, 0xFF, t.nbytes());
    return;
  }
  HostTensor h(t.dtype, shape_of(t));
  std::memset(h.t.data, 0xFF, h.t.nbytes());
  copy_tensor(t, h.t);
}

std::vector<uint8_t> raw_bytes(const Tensor& t) {
  HostTensor h = download(t);
  const auto* p = static_cast<const uint8_t*>(h.t.data);
  return std::vector<uint8_t>(p, p + h.t.nbytes());
}

DeviceTensor make_row_view(DType dtype, int64_t rows, int64_t cols, int64_t ld) {
  DeviceTensor d(dtype, {rows, ld});
  d.t.shape[1] = cols;  // same rows, narrower: a column slice of the [rows, ld] buffer
  return d;
}

Tensor head_view(const Tensor& fused, int64_t col, int64_t H, int64_t E) {
  const int64_t B = fused.shape[0], T = fused.shape[1], W = fused.shape[2];
  Tensor t = fused;
  t.data = fused.at_offset(col);
  t.ndim = 4;
  t.shape = {B, T, H, E, 0, 0};
  t.stride = {T * W, W, E, 1, 0, 0};
  return t;
}

HostTensor random_normal(std::vector<int64_t> shape, uint64_t seed, double stddev) {
  HostTensor h(DType::F32, std::move(shape));
  fill_normal(h, seed, stddev);
  return h;
}

HostTensor random_uniform(std::vector<int64_t> shape, uint64_t seed, double lo, double hi) {
  HostTensor h(DType::F32, std::move(shape));
  fill_uniform(h, seed, lo, hi);
  return h;
}

double rel_error(const HostTensor& a, const HostTensor& b) { return norm_rel_error(a, b); }

}  // namespace hlm::test
