// Shared test helpers.
#include "test_util.h"

#include <algorithm>
#include <limits>

namespace hlm::test {

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  storage.assign(static_cast<size_t>(std::max<int64_t>(n, 1)), 0.0);
  t = Tensor(storage.data(), dtype, Device::CPU, Shape(shape.data(), shape.size()));
}
HostTensor::HostTensor(HostTensor&& o) noexcept : storage(std::move(o.storage)), t(o.t) {
  t.data = storage.data();
}
HostTensor& HostTensor::operator=(HostTensor&& o) noexcept {
  storage = std::move(o.storage);
  t = o.t;
  t.data = storage.data();
  return *this;
}

double HostTensor::get(int64_t i) const {
  switch (t.dtype) {
    case DType::F32: return t.ptr<float>()[i];
    case DType::F64: return t.ptr<double>()[i];
    case DType::BF16: return bf16_bits_to_f32(t.ptr<uint16_t>()[i]);
    case DType::F16: return f16_bits_to_f32(t.ptr<uint16_t>()[i]);
    case DType::I32: return t.ptr<int32_t>()[i];
    case DType::I64: return static_cast<double>(t.ptr<int64_t>()[i]);
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

void HostTensor::set(int64_t i, double v) {
  switch (t.dtype) {
    case DType::F32: t.ptr<float>()[i] = static_cast<float>(v); break;
    case DType::F64: t.ptr<double>()[i] = v; break;
    case DType::BF16: t.ptr<uint16_t>()[i] = f32_to_bf16_bits(static_cast<float>(v)); break;
    case DType::F16: t.ptr<uint16_t>()[i] = f32_to_f16_bits(static_cast<float>(v)); break;
    case DType::I32: t.ptr<int32_t>()[i] = static_cast<int32_t>(v); break;
    case DType::I64: t.ptr<int64_t>()[i] = static_cast<int64_t>(v); break;
    default: break;
  }
}

void fill_uniform(HostTensor& h, uint64_t seed, double lo, double hi) {
  Rng rng(seed, 11);
  for (int64_t i = 0; i < h.t.numel(); ++i) h.set(i, lo + (hi - lo) * rng.uniform());
}

void fill_normal(HostTensor& h, uint64_t seed, double stddev) {
  Rng rng(seed, 12);
  for (int64_t i = 0; i < h.t.numel(); ++i) h.set(i, stddev * rng.normal());
}

double max_rel_error(const HostTensor& a, const HostTensor& b) {
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < b.t.numel(); ++i) {
    double x = a.get(i), y = b.get(i);
    if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::fabs(x - y));
    scale = std::max(scale, std::fabs(y));
  }
  return worst / std::max(scale, 1e-30);
}

double norm_rel_error(const HostTensor& a, const HostTensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < b.t.numel(); ++i) {
    double x = a.get(i), y = b.get(i);
    if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::infinity();
    num += (x - y) * (x - y);
    den += y * y;
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

std::string source_path(const std::string& rel) { return std::string(HLM_SOURCE_DIR) + "/" + rel; }

}  // namespace hlm::test
