// CPU forward+backward throughput of the reference hybrid (d_model 256, pattern M-M*-M-M-, 8 Mamba
// heads × 64, d_state 64, 4/2 attention heads × 64, MLP 1024 relu², vocab 50,277, T = 512) and
// where the time goes: GEMM (BLAS) against every other op.
//   bench_model_cpu [--iters N] [--seq-len T] [--batch B]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "core/profile.h"
#include "core/rng.h"
#include "model/model.h"
#include "ops/loss.h"

using namespace hlm;

int main(int argc, char** argv) {
  int iters = 7;
  int64_t T = 512, B = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seq-len")) T = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--batch")) B = std::atoll(argv[i + 1]);
  }
  ModelConfig c;
  c.pattern = "M-M*-M-M-";
  c.vocab_size = 50277;
  c.d_model = 256;
  c.mamba_heads = 8;
  c.mamba_head_dim = 64;
  c.ssm_state = 64;
  c.n_groups = 1;
  c.attn_heads = 4;
  c.kv_heads = 2;
  c.attn_head_dim = 64;
  c.mlp_hidden = 1024;
  c.mlp_activation = Activation::ReluSquared;
  Model m(c, Device::CPU, DType::F32);
  m.init_weights(1);

  std::vector<int32_t> ids(static_cast<size_t>(B * T)), tg(static_cast<size_t>(B * T));
  Rng rng(3);
  for (auto& v : ids) v = static_cast<int32_t>(rng.below(static_cast<uint64_t>(c.vocab_size)));
  for (int64_t i = 0; i < B * T; ++i) tg[static_cast<size_t>(i)] = (i + 1) % T ? ids[static_cast<size_t>(i + 1)] : kIgnoreIndex;
  ModelInput in;
  in.ids = Tensor(ids.data(), DType::I32, Device::CPU, {B, T});
  in.targets = Tensor(tg.data(), DType::I32, Device::CPU, {B, T});

  auto step = [&] {
    m.zero_grads();
    m.forward(in);
    m.backward(1.0f);
  };
  step();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];

  Profile::enable(true);
  Profile::reset();
  for (int i = 0; i < 3; ++i) step();
  Profile::enable(false);
  double total = 0, gemm = 0;
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [name, t] : Profile::totals()) {
    total += t.seconds;
    if (name == "matmul" || name == "linear_forward" || name == "linear_backward") gemm += t.seconds;
    rows.emplace_back(t.seconds, name);
  }
  std::sort(rows.rbegin(), rows.rend());

  fmt::print("reference hybrid: {}\n", c.summary());
  fmt::print("B = {}, T = {}, {} timed forward+backward steps after 1 warm-up\n", B, T, iters);
  fmt::print("median step {:.1f} ms  ->  {:.0f} tokens/s (min {:.1f} ms, max {:.1f} ms)\n\n", med * 1e3,
             static_cast<double>(B * T) / med, times.front() * 1e3, times.back() * 1e3);
  fmt::print("| op | ms per step | share |\n|---|---|---|\n");
  for (const auto& [s, name] : rows)
    fmt::print("| {} | {:.2f} | {:.1f}% |\n", name, s / 3 * 1e3, 100 * s / total);
  fmt::print("\nGEMM (matmul + linear_forward + linear_backward): {:.1f}% of op time; ops cover {:.1f}% of the step\n",
             100 * gemm / total, 100 * (total / 3) / med);
  return 0;
}
