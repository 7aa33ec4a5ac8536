// train/: the learning-rate schedules warm up linearly and then follow cosine / WSD exactly.
#include <gtest/gtest.h>

#include <cmath>

#include "train/schedule.h"

namespace hlm {
namespace {

TEST(Schedule, WarmupThenCosineToFloor) {
  LrSchedule s;
  s.max_lr = 1e-3;
  s.min_lr = 1e-4;
  s.warmup_steps = 10;
  s.total_steps = 110;
  EXPECT_DOUBLE_EQ(s.at(1), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);
  EXPECT_NEAR(s.at(60), 1e-4 + 0.5 * 9e-4, 1e-12);
  EXPECT_NEAR(s.at(110), 1e-4, 1e-12);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-12);
}

TEST(Schedule, WsdHoldsThenDecaysLinearly) {
  LrSchedule s;
  s.kind = LrSchedule::Kind::Wsd;
  s.max_lr = 2.0;
  s.min_lr = 0.0;
  s.warmup_steps = 0;
  s.total_steps = 100;
  s.decay_fraction = 0.2;
  EXPECT_DOUBLE_EQ(s.at(50), 2.0);
  EXPECT_DOUBLE_EQ(s.at(80), 2.0);
  EXPECT_NEAR(s.at(90), 1.0, 1e-12);
  EXPECT_NEAR(s.at(100), 0.0, 1e-12);
  EXPECT_EQ(LrSchedule::parse_kind("wsd"), LrSchedule::Kind::Wsd);
  EXPECT_ANY_THROW(LrSchedule::parse_kind("linear-ish"));
}

}  // namespace
}  // namespace hlm
