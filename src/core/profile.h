// A switchable per-op wall-clock profile: the op dispatch point opens a scope per call; when
// profiling is off (the default) a scope costs one branch. Used by benchmarks to report where a
// step's time goes (e.g. the share of GEMM). On CUDA, enable device_sync to time device work.
#pragma once

#include <chrono>
#include <map>
#include <string>

namespace hlm {

struct OpTime {
  double seconds = 0;
  int64_t calls = 0;
};

class Profile {
 public:
  static void enable(bool on, bool device_sync = false);
  static bool enabled() { return enabled_; }
  static bool device_sync() { return sync_; }
  static void reset();
  static void add(const char* op, double seconds);
  static const std::map<std::string, OpTime>& totals();

 private:
  static inline bool enabled_ = false;
  static inline bool sync_ = false;
};

class ProfileScope {
 public:
  explicit ProfileScope(const char* op, bool cuda = false);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* op_;
  bool active_, cuda_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace hlm
