// Shared test helpers: random tensors, error norms, and the GPU skip.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace hlm::test {

// Skips the current test with a visible reason where no CUDA device (or backend) exists.
#define HLM_REQUIRE_GPU()                                                       \
  do {                                                                          \
    if (!::hlm::cuda_available()) GTEST_SKIP() << "skipped: no GPU";            \
  } while (0)

// Host buffer + tensor, owning.
struct HostTensor {
  std::vector<double> storage;  // 8-byte elements cover every dtype
  Tensor t;
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shape);
  HostTensor(const HostTensor&) = delete;
  HostTensor& operator=(const HostTensor&) = delete;
  HostTensor(HostTensor&& o) noexcept;
  HostTensor& operator=(HostTensor&& o) noexcept;
  // Element i as double (float dtypes and integer dtypes).
  double get(int64_t i) const;
  void set(int64_t i, double v);
};

// Fills a float tensor with uniform values in [lo, hi) drawn from (seed, stream).
void fill_uniform(HostTensor& h, uint64_t seed, double lo, double hi);
void fill_normal(HostTensor& h, uint64_t seed, double stddev);
// max |a-b| / max(max|b|, tiny); NaN in either gives +inf.
double max_rel_error(const HostTensor& a, const HostTensor& b);
// ‖a − b‖₂ / ‖b‖₂; NaN gives +inf.
double norm_rel_error(const HostTensor& a, const HostTensor& b);
// Path of a file under the source tree.
std::string source_path(const std::string& rel);

}  // namespace hlm::test
