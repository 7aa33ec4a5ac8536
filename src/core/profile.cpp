// Per-op profile.
#include "core/profile.h"

#include "core/memory.h"

namespace hlm {

namespace {
std::map<std::string, OpTime>& table() {
  static std::map<std::string, OpTime> t;
  return t;
}
}  // namespace

void Profile::enable(bool on, bool device_sync) {
  enabled_ = on;
  sync_ = device_sync;
}
void Profile::reset() { table().clear(); }
void Profile::add(const char* op, double seconds) {
  OpTime& t = table()[op];
  t.seconds += seconds;
  t.calls += 1;
}
const std::map<std::string, OpTime>& Profile::totals() { return table(); }

ProfileScope::ProfileScope(const char* op, bool cuda)
    : op_(op), active_(Profile::enabled()), cuda_(cuda) {
  if (!active_) return;
  if (cuda_ && Profile::device_sync()) device_synchronize(Device::CUDA);
  t0_ = std::chrono::steady_clock::now();
}

ProfileScope::~ProfileScope() {
  if (!active_) return;
  if (cuda_ && Profile::device_sync()) device_synchronize(Device::CUDA);
  Profile::add(op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
}

}  // namespace hlm
