// infer/: greedy picks the argmax, top-k / top-p never leave their sets, sampling follows the
// softmax distribution, a seed reproduces the same choices, and bad options fail clearly.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "infer/sampler.h"

namespace hlm {
namespace {

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  SamplingOptions o;
  o.temperature = 0;
  Sampler s(o);
  std::vector<float> lg = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.sample(lg), 1);
}

TEST(Sampler, FollowsTheSoftmaxAndRespectsTopKTopP) {
  std::vector<float> lg = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingOptions o;
  o.seed = 5;
  Sampler s(o);
  std::map<int, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; ++i) counts[s.sample(lg)]++;
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.01);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.01);
  EXPECT_NEAR(counts[3] / double(n), 0.05, 0.005);

  o.top_k = 2;
  Sampler k(o);
  for (int i = 0; i < 2000; ++i) EXPECT_LT(k.sample(lg), 2);
  o.top_k = 0;
  o.top_p = 0.7;  // {0.5, 0.3} reaches 0.8 >= 0.7
  Sampler p(o);
  std::map<int, int> pc;
  for (int i = 0; i < 20000; ++i) pc[p.sample(lg)]++;
  EXPECT_EQ(pc.count(2) + pc.count(3), 0u);
  EXPECT_NEAR(pc[0] / 20000.0, 0.5 / 0.8, 0.015);
}

TEST(Sampler, SeedReproducesAndTemperatureSharpens) {
  std::vector<float> lg = {0.0f, 0.5f, 1.0f};
  SamplingOptions o;
  o.seed = 42;
  Sampler a(o), b(o);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.sample(lg), b.sample(lg));
  o.temperature = 0.05;
  Sampler cold(o);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cold.sample(lg), 2);
}

TEST(Sampler, BadOptionsFail) {
  SamplingOptions o;
  o.temperature = -1;
  EXPECT_THROW(o.validate(), Error);
  o = SamplingOptions{};
  o.top_p = 0;
  EXPECT_THROW(o.validate(), Error);
  o = SamplingOptions{};
  o.top_k = -3;
  EXPECT_THROW(o.validate(), Error);
}

}  // namespace
}  // namespace hlm
