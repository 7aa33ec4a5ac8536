// Checks the host emulation of mbarriers, cp.async arriving on an mbarrier and named barriers
// (ops/cuda/warp_mma.cuh) through hlm::cuda::pipeline_sum: a producer warp streaming tiles to two
// consumer warps through a two-stage ring must give the float sums of the reference, bitwise;
// with the consumers not waiting for the first stage it must not (the copies land only when the
// stage's phase completes) — judged under the default schedule, where the last consumer thread
// runs on from the block barrier before the producer; under the warp schedules the producer warp
// may fill the stage first, so there the diagnostic only has to run through. The GPU test
// (PipelineCuda.ProducerConsumer) checks the correct protocol on the hardware.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ops/cuda/pipeline_check.h"

using namespace hlm;

int main() {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  const char* sched = std::getenv("EMU_SCHED");
  const bool judge_skip = !sched || std::strcmp(sched, "fwd") == 0;
  int failures = 0;
  for (int tiles : {1, 2, 5, 8}) {
    std::vector<float> in(static_cast<size_t>(tiles) * cuda::kPipeTile);
    for (auto& v : in) v = nd(rng);
    const std::vector<float> ref = cuda::pipeline_sum_reference(in, tiles);
    for (bool skip : {false, true}) {
      const std::vector<float> out = cuda::pipeline_sum(in, tiles, skip);
      const bool equal = std::memcmp(out.data(), ref.data(), ref.size() * 4) == 0;
      const bool ok = skip ? (!equal || !judge_skip) : equal;
      failures += ok ? 0 : 1;
      std::printf("%s pipeline %d tiles%s: %s\n", ok ? "ok  " : "FAIL", tiles,
                  skip ? (judge_skip ? " (consumers skip the first full-stage wait: must be wrong)"
                                     : " (consumers skip the first full-stage wait: not judged under this schedule)")
                       : "",
                  equal ? "bitwise equal to the reference" : "differs from the reference");
    }
  }
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
