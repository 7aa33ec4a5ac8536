// Next-token sampling from logits: greedy, temperature, top-k, top-p, from a seeded counter-based
// RNG so a seed gives the same text every run.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/rng.h"

namespace hlm {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;

  // Throws InvalidArgument naming the flag that is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o, uint64_t stream = 0);
  // Picks a token id from one row of logits.
  int32_t sample(std::span<const float> logits);

 private:
  SamplingOptions opt_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace hlm
