// Learning-rate schedules: linear warmup, then cosine decay to a floor, or warmup-stable-decay (WSD).
#pragma once

#include <cstdint>
#include <string>

namespace hlm {

struct LrSchedule {
  enum class Kind { Cosine, Wsd, Constant };
  Kind kind = Kind::Cosine;
  double max_lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double decay_fraction = 0.2;  // WSD: the last fraction of steps decays linearly to min_lr

  // Learning rate for 1-based optimizer step `step`.
  double at(int64_t step) const;
  static Kind parse_kind(const std::string& name);  // cosine | wsd | constant
  static const char* kind_name(Kind k);
};

}  // namespace hlm
