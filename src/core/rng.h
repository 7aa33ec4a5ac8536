// Counter-based RNG (Philox4x32-10): the value at (seed, stream, index) is a pure function, so the
// CPU and the GPU draw the same stream, and any position can be drawn without the ones before it.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/macros.h"

namespace hlm {

struct Philox4 {
  uint32_t v[4];
};

HLM_HD Philox4 philox4x32_10(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in [0, 1) with 24 random bits.
HLM_HD float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  Philox4 r = philox4x32_10(seed, stream, index);
  return static_cast<float>(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller, computed in double so host and device agree to the last bit
// in all but vanishingly rare cases.
HLM_HD float rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  Philox4 r = philox4x32_10(seed, stream, index);
  double u1 = (static_cast<double>(r.v[0] >> 8) + 1.0) * (1.0 / 16777216.0);  // (0, 1]
  double u2 = static_cast<double>(r.v[1] >> 8) * (1.0 / 16777216.0);          // [0, 1)
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

// Host-side sequential view of one (seed, stream): draws advance an index that can be saved.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t stream = 0, uint64_t index = 0)
      : seed_(seed), stream_(stream), index_(index) {}
  float uniform() { return rng_uniform(seed_, stream_, index_++); }
  float normal() { return rng_normal(seed_, stream_, index_++); }
  uint32_t next_u32() { return philox4x32_10(seed_, stream_, index_++).v[0]; }
  // Uniform integer in [0, n) (n > 0), by 64-bit multiply-shift on 32 fresh bits.
  uint64_t below(uint64_t n) {
    Philox4 r = philox4x32_10(seed_, stream_, index_++);
    uint64_t x = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    return static_cast<uint64_t>((static_cast<unsigned __int128>(x) * n) >> 64);
  }
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }
  uint64_t index() const { return index_; }
  void set_index(uint64_t i) { index_ = i; }

 private:
  uint64_t seed_, stream_, index_;
};

}  // namespace hlm
