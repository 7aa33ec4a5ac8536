// Sampling.
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace hlm {

void SamplingOptions::validate() const {
  HLM_CHECK_ARG(std::isfinite(temperature) && temperature >= 0,
                "--temperature must be >= 0 (got {})", temperature);
  HLM_CHECK_ARG(top_k >= 0, "--top-k must be >= 0 (got {})", top_k);
  HLM_CHECK_ARG(top_p > 0 && top_p <= 1, "--top-p must be in (0, 1] (got {})", top_p);
}

Sampler::Sampler(const SamplingOptions& o, uint64_t stream) : opt_(o), rng_(o.seed, stream) {
  o.validate();
}

int32_t Sampler::sample(std::span<const float> logits) {
  const int64_t V = static_cast<int64_t>(logits.size());
  HLM_ASSERT(V > 0);
  if (opt_.temperature == 0.0) {
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (logits[static_cast<size_t>(v)] > logits[static_cast<size_t>(best)]) best = v;
    return static_cast<int32_t>(best);
  }
  scratch_.resize(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v)
    scratch_[static_cast<size_t>(v)] = {logits[static_cast<size_t>(v)], static_cast<int32_t>(v)};
  // Highest first; ties by id so the order is total.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = V;
  if (opt_.top_k > 0 && opt_.top_k < V) {
    keep = opt_.top_k;
    std::partial_sort(scratch_.begin(), scratch_.begin() + keep, scratch_.end(), by_logit);
  } else {
    std::sort(scratch_.begin(), scratch_.end(), by_logit);
  }
  const double inv_t = 1.0 / opt_.temperature;
  const double top = scratch_[0].first;
  std::vector<double> p(static_cast<size_t>(keep));
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    p[static_cast<size_t>(i)] = std::exp((scratch_[static_cast<size_t>(i)].first - top) * inv_t);
    sum += p[static_cast<size_t>(i)];
  }
  if (opt_.top_p < 1.0) {
    double cum = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cum += p[static_cast<size_t>(i)] / sum;
      if (cum >= opt_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = 0;
    for (int64_t i = 0; i < keep; ++i) sum += p[static_cast<size_t>(i)];
  }
  double u = static_cast<double>(rng_.uniform()) * sum;
  for (int64_t i = 0; i < keep; ++i) {
    u -= p[static_cast<size_t>(i)];
    if (u < 0) return scratch_[static_cast<size_t>(i)].second;
  }
  return scratch_[static_cast<size_t>(keep - 1)].second;
}

}  // namespace hlm
