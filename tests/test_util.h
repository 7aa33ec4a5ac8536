// Shared test helpers: random tensors, error norms, and the GPU skip.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace hlm::test {

// Sets an environment variable for a scope ("" unsets it); the old value comes back at its end.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (*value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_.c_str(), old_.c_str(), 1);
    else
      unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

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
// A host tensor of the given dtype and shape filled with normal values (stddev) from seed.
HostTensor randn(DType dtype, std::vector<int64_t> shape, uint64_t seed, double stddev = 1.0);
// A deep copy (HostTensor itself is move-only).
HostTensor copy_of(const HostTensor& h);
// Σ a·b over all elements (as doubles).
double dot(const HostTensor& a, const HostTensor& b);

// Directional central-difference check of an analytic gradient. u is a random normal direction
// (from seed); fd = (loss(x + εu) − loss(x − εu)) / 2ε, analytic = Σ grad·u. loss() must recompute
// the scalar from the current contents of x. Returns |fd − analytic| / max(|fd|, |analytic|);
// x is restored. Use float64 tensors.
double fd_direction_error(HostTensor& x, const HostTensor& grad,
                          const std::function<double()>& loss, uint64_t seed, double eps = 1e-6);

// Path of a file under the source tree ($HLM_SOURCE_DIR overrides the build's, for a tree copied
// elsewhere, e.g. to the GPU machine).
std::string source_path(const std::string& rel);
// The hybridlm binary ($HLM_BINARY overrides the build's path).
std::string binary_path();

// Runs `hybridlm ARGS` through the shell; stderr joins stdout unless stdout_only.
struct CmdResult {
  int code;
  std::string out;
};
CmdResult run_binary(const std::string& args, bool stdout_only = false);
// Runs a whole shell command line (e.g. with a wrapper such as timeout); stderr joins stdout.
CmdResult run_shell(const std::string& line);

}  // namespace hlm::test
