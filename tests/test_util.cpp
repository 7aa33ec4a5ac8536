// Shared test helpers.
#include "test_util.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>
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

HostTensor randn(DType dtype, std::vector<int64_t> shape, uint64_t seed, double stddev) {
  HostTensor h(dtype, std::move(shape));
  fill_normal(h, seed, stddev);
  return h;
}

HostTensor copy_of(const HostTensor& h) {
  HostTensor c(h.t.dtype, std::vector<int64_t>(h.t.shape.begin(), h.t.shape.begin() + h.t.ndim));
  c.storage = h.storage;
  c.t.data = c.storage.data();
  return c;
}

double dot(const HostTensor& a, const HostTensor& b) {
  double s = 0;
  for (int64_t i = 0; i < b.t.numel(); ++i) s += a.get(i) * b.get(i);
  return s;
}

double fd_direction_error(HostTensor& x, const HostTensor& grad,
                          const std::function<double()>& loss, uint64_t seed, double eps) {
  const int64_t n = x.t.numel();
  std::vector<double> u(static_cast<size_t>(n)), x0(static_cast<size_t>(n));
  Rng rng(seed, 13);
  double analytic = 0;
  for (int64_t i = 0; i < n; ++i) {
    u[static_cast<size_t>(i)] = rng.normal();
    x0[static_cast<size_t>(i)] = x.get(i);
    analytic += grad.get(i) * u[static_cast<size_t>(i)];
  }
  auto shifted = [&](double s) {
    for (int64_t i = 0; i < n; ++i) x.set(i, x0[static_cast<size_t>(i)] + s * u[static_cast<size_t>(i)]);
    return loss();
  };
  const double fd = (shifted(eps) - shifted(-eps)) / (2 * eps);
  for (int64_t i = 0; i < n; ++i) x.set(i, x0[static_cast<size_t>(i)]);
  const double scale = std::max(std::fabs(fd), std::fabs(analytic));
  return scale == 0 ? 0.0 : std::fabs(fd - analytic) / scale;
}

std::string source_path(const std::string& rel) {
  const char* env = std::getenv("HLM_SOURCE_DIR");
  return std::string(env && *env ? env : HLM_SOURCE_DIR) + "/" + rel;
}

CmdResult run_shell_raw(const std::string& cmd);

std::string binary_path() {
  const char* env = std::getenv("HLM_BINARY");
  return env && *env ? env : HLM_BINARY;
}

CmdResult run_binary(const std::string& args, bool stdout_only) {
  if (!stdout_only) return run_shell(binary_path() + " " + args);
  return run_shell_raw(binary_path() + " " + args + " 2>/dev/null");
}

CmdResult run_shell(const std::string& line) { return run_shell_raw(line + " 2>&1"); }

CmdResult run_shell_raw(const std::string& cmd) {
  CmdResult r{0, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return CmdResult{-1, "popen failed"};
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace hlm::test
