// Learning-rate schedules.
#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace hlm {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps)
    return max_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(total_steps - warmup_steps, 1));
  const double progress = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
  switch (kind) {
    case Kind::Constant:
      return max_lr;
    case Kind::Cosine:
      return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + std::cos(M_PI * progress));
    case Kind::Wsd: {
      const double decay_start = 1.0 - decay_fraction;
      if (progress <= decay_start) return max_lr;
      const double f = (progress - decay_start) / std::max(decay_fraction, 1e-12);
      return max_lr + (min_lr - max_lr) * std::min(f, 1.0);
    }
  }
  return max_lr;
}

LrSchedule::Kind LrSchedule::parse_kind(const std::string& name) {
  if (name == "cosine") return Kind::Cosine;
  if (name == "wsd") return Kind::Wsd;
  if (name == "constant") return Kind::Constant;
  fail(ErrorKind::InvalidArgument, "--schedule '{}': use cosine, wsd or constant", name);
}

const char* LrSchedule::kind_name(Kind k) {
  switch (k) {
    case Kind::Cosine: return "cosine";
    case Kind::Wsd: return "wsd";
    case Kind::Constant: return "constant";
  }
  return "?";
}

}  // namespace hlm
