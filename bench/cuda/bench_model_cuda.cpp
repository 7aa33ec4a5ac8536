// Whole-model GPU benchmarks (the seed's claims, measured with our own code):
//   --train   the 1.43B hybrid of gpu.md's training-step reference at T = 8192: step time,
//             tokens/s, MFU (gpu.md's formula), memory; then the longest T that trains
//   --layers  our Mamba-2 layer vs our attention layer at the 8B shape, forward L = 2K..256K and
//             forward + backward L = 2K..32K; one Mamba-2 decode step at batch 1 / 32
//   --mixer   (also part of --layers) one decode step of the 8B mixer alone, as gpu.md's reference
//             times it, with the opt-in fused middle in the same run
//   --decode  an 8B-shaped hybrid (Mamba-2-Hybrid 8B pattern and sizes) vs an all-attention model of
//             the same width, random bf16 weights: time per decoded token at contexts 4K..128K and
//             batch 1..64, against weight bytes / 4.2 TB/s
//   --json FILE  writes every number as JSON.
// Times are medians of timed repeats after warm-up; the device is synchronised around each one.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/profile.h"
#include "core/rng.h"
#include "model/model.h"
#include "ops/conv1d.h"
#include "ops/elementwise.h"
#include "ops/graph.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/gemm.h"
#include "ops/ssd.h"
#include "train/optimizer.h"

using namespace hlm;

namespace {

nlohmann::json g_json;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds of `reps` timed calls after `warm` untimed ones.
double time_median(const std::function<void()>& f, int warm, int reps) {
  for (int i = 0; i < warm; ++i) f();
  device_synchronize(Device::CUDA);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    double t0 = now_s();
    f();
    device_synchronize(Device::CUDA);
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Time per call with calls queued back to back (one synchronisation at the end): the steady-state
// device time of a replayed decode step, as a generation loop that keeps the GPU fed sees it.
double time_back_to_back(const std::function<void()>& f, int warm, int reps) {
  for (int i = 0; i < warm; ++i) f();
  device_synchronize(Device::CUDA);
  double t0 = now_s();
  for (int i = 0; i < reps; ++i) f();
  device_synchronize(Device::CUDA);
  return (now_s() - t0) / reps;
}

// One synchronised pass of f with the per-op profile on: where its time goes, largest first
// (each op waits for the device, so small ops carry a few µs of launch latency each), as a
// markdown table appended to *text.
nlohmann::json op_profile(const std::string& title, const std::function<void()>& f, std::string* text) {
  Profile::reset();
  Profile::enable(true, /*device_sync=*/true);
  f();
  Profile::enable(false);
  double total = 0;
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [name, ot] : Profile::totals()) {
    total += ot.seconds;
    rows.emplace_back(ot.seconds, fmt::format("{} ({} calls)", name, ot.calls));
  }
  std::sort(rows.rbegin(), rows.rend());
  nlohmann::json prof = nlohmann::json::array();
  *text += fmt::format("\nprofile: {} (each op synchronised: {:.2f} ms in ops)\n| op | ms | share |\n|---|---|---|\n",
                       title, total * 1e3);
  for (const auto& [sec, name] : rows) {
    *text += fmt::format("| {} | {:.3f} | {:.1f}% |\n", name, sec * 1e3, 100 * sec / total);
    prof.push_back({{"op", name}, {"ms", sec * 1e3}});
  }
  return prof;
}

size_t free_bytes() {
  size_t f = 0, total = 0;
  cudaMemGetInfo(&f, &total);
  return f;
}

struct DeviceTokens {
  Buffer buf;
  ModelInput in;
  DeviceTokens(int64_t B, int64_t T, int64_t V, bool targets) {
    std::vector<int32_t> ids(static_cast<size_t>(B * T)), tg(static_cast<size_t>(B * T)), pos(static_cast<size_t>(B * T));
    Rng rng(5);
    for (auto& v : ids) v = static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
    for (int64_t i = 0; i < B * T; ++i) {
      tg[static_cast<size_t>(i)] = (i + 1) % T ? ids[static_cast<size_t>(i + 1)] : kIgnoreIndex;
      pos[static_cast<size_t>(i)] = static_cast<int32_t>(i % T);
    }
    buf = Buffer(Device::CUDA, static_cast<size_t>(3 * B * T) * 4);
    int32_t* p = static_cast<int32_t*>(buf.data());
    device_copy(p, Device::CUDA, ids.data(), Device::CPU, ids.size() * 4);
    device_copy(p + B * T, Device::CUDA, tg.data(), Device::CPU, tg.size() * 4);
    device_copy(p + 2 * B * T, Device::CUDA, pos.data(), Device::CPU, pos.size() * 4);
    in.ids = Tensor(p, DType::I32, Device::CUDA, {B, T});
    if (targets) in.targets = Tensor(p + B * T, DType::I32, Device::CUDA, {B, T});
    in.pos = Tensor(p + 2 * B * T, DType::I32, Device::CUDA, {B, T});
  }
};

// ---------------------------------------------------------------------------------------------
ModelConfig hybrid_1p4b() {
  ModelConfig c;
  c.pattern = "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-M-";
  c.vocab_size = 50304;
  c.d_model = 2048;
  c.mamba_heads = 64;
  c.mamba_head_dim = 64;
  c.n_groups = 8;
  c.ssm_state = 128;
  c.chunk_size = 128;
  c.attn_heads = 16;
  c.kv_heads = 8;
  c.attn_head_dim = 128;
  c.mlp_hidden = 4096;
  c.mlp_activation = Activation::ReluSquared;
  c.norm_eps = 1e-5f;
  c.validate();
  return c;
}

void bench_train(int steps) {
  ModelConfig c = hybrid_1p4b();
  const double peak = 774e12;  // gpu.md: bf16 GEMM 8192³ through cuBLAS on this H200
  auto run_at = [&](int64_t T, int reps, nlohmann::json& out, bool recompute) {
    size_t free0 = free_bytes();
    Model m(c, Device::CUDA, DType::BF16);
    m.set_recompute(recompute);
    m.init_weights(1);
    AdamWConfig ac;
    AdamW opt(m.table(), Device::CUDA, DType::F32, ac);
    DeviceTokens tok(1, T, c.vocab_size, true);
    auto step = [&] {
      m.zero_grads();
      m.forward(tok.in);
      m.backward(1.0f);
      double gn = std::sqrt(sum_squares(m.grads()));
      opt.step(m.params(), m.grads(), m.params_lowp(), 1e-4, gn > 1.0 ? 1.0 / gn : 1.0);
    };
    double t = time_median(step, reps > 1 ? 2 : 1, reps);
    size_t used = free0 - free_bytes();
    if (reps > 1 && !recompute) {  // where one step's time goes (ops synchronised one by one)
      std::string text;
      g_json["train_profile"] = op_profile(fmt::format("one training step at T = {}", T), step, &text);
      fmt::print("{}", text);
    }
    const int64_t nonemb = count_non_embedding_params(m.table());
    // gpu.md's formula with its parameter count (1.332B), so the two MFUs are comparable; our own
    // count of this config's non-embedding parameters is reported next to it.
    const double flops_per_token =
        6.0 * 1.332e9 + static_cast<double>(c.count(LayerKind::Attention)) * 6.0 * static_cast<double>(T) * 16 * 128;
    const double tps = static_cast<double>(T) / t;
    out = {{"T", T}, {"step_ms", t * 1e3}, {"tokens_per_s", tps}, {"mfu", tps * flops_per_token / peak},
           {"memory_gb", static_cast<double>(used) / 1e9}, {"non_embedding_params", nonemb},
           {"recompute", recompute}, {"activation_gb", static_cast<double>(m.activation_bytes(1, T)) / 1e9}};
    return t;
  };
  nlohmann::json main, main_rc;
  run_at(8192, steps, main, false);
  run_at(8192, std::max(2, steps / 2), main_rc, true);
  fmt::print("\n## Training step, 1.43B hybrid (56 layers, d_model 2048), B = 1, T = 8192\n");
  fmt::print("non-embedding parameters {:.3f}B by our count (gpu.md's formula uses 1.332B; MFU below uses it)\n",
             main["non_embedding_params"].get<double>() / 1e9);
  fmt::print("| | ours | PyTorch + fused reference kernels (gpu.md) | target |\n|---|---|---|---|\n");
  fmt::print("| step | {:.1f} ms | 212 ms | |\n", main["step_ms"].get<double>());
  fmt::print("| tokens/s | {:.1f}K | 38.6K | ≥ 46K |\n", main["tokens_per_s"].get<double>() / 1e3);
  fmt::print("| MFU | {:.1f}% | 41.9% | ≥ 50% |\n", 100 * main["mfu"].get<double>());
  fmt::print("| memory | {:.1f} GB | 44 GB | |\n", main["memory_gb"].get<double>());
  fmt::print("| with --recompute | {:.1f} ms, {:.1f}K tokens/s, {:.1f}% MFU, {:.1f} GB | | |\n",
             main_rc["step_ms"].get<double>(), main_rc["tokens_per_s"].get<double>() / 1e3,
             100 * main_rc["mfu"].get<double>(), main_rc["memory_gb"].get<double>());
  g_json["train"] = main;
  g_json["train_recompute"] = main_rc;

  fmt::print("\n### Longest sequence that trains, with --recompute (one step: forward + backward + AdamW)\n"
             "| T | step | tokens/s | memory |\n|---|---|---|---|\n");
  nlohmann::json longest = nlohmann::json::array();
  for (int64_t T = 32768; T <= (int64_t{1} << 21); T *= 2) {
    nlohmann::json r;
    cuda::release_scratch();  // each length as a job of its own: no workspace kept from the last one
    try {
      run_at(T, 1, r, true);
    } catch (const Error& e) {
      fmt::print("| {}K | does not fit: {} | | |\n", T / 1024, e.what());
      longest.push_back({{"T", T}, {"error", e.what()}});
      break;
    }
    fmt::print("| {}K | {:.0f} ms | {:.1f}K | {:.1f} GB |\n", T / 1024, r["step_ms"].get<double>(),
               r["tokens_per_s"].get<double>() / 1e3, r["memory_gb"].get<double>());
    longest.push_back(r);
    if (r["step_ms"].get<double>() > 20000) break;
  }
  g_json["train_longest"] = longest;
}

// ---------------------------------------------------------------------------------------------
ModelConfig layer_8b(const std::string& pattern) {
  ModelConfig c;
  c.pattern = pattern;
  c.vocab_size = 256;
  c.d_model = 4096;
  c.mamba_heads = 128;
  c.mamba_head_dim = 64;
  c.n_groups = 8;
  c.ssm_state = 128;
  c.chunk_size = 128;
  c.attn_heads = 32;
  c.kv_heads = 8;
  c.attn_head_dim = 128;
  c.mlp_hidden = 16384;
  c.mlp_activation = Activation::Gelu;
  c.validate();
  return c;
}

// The Mamba-2 layer alone, as gpu.md's reference times "the layer": in_proj, conv1d + SiLU, SSD,
// gated RMSNorm, out_proj (no pre-norm, residual, embedding, head or loss), forward and forward +
// backward (input gradient and every weight gradient, accumulated into fp32 as training does; the
// gradients are not zeroed between calls, so no fill is timed). The same ops and arguments as
// Model::layer_forward / layer_backward. one_arena: the activations carved from one allocation, as
// the model's arena does (else one allocation each).
nlohmann::json bench_mamba_layer_alone(const std::vector<int64_t>& Ls, std::string* profiles, bool one_arena = false) {
  const ModelConfig c = layer_8b("M");
  const int64_t D = c.d_model, H = c.mamba_heads, P = c.mamba_head_dim, G = c.n_groups, N = c.ssm_state,
                Di = c.d_inner(), Cd = c.conv_dim(), W = c.in_proj_dim(), K = c.conv_kernel, GN = G * N;
  const DType a = DType::BF16, f = DType::F32;
  // One allocation per tensor (the buffers own device memory: moving them keeps the addresses).
  auto alloc_in = [](std::vector<Buffer>& bufs, DType d, std::initializer_list<int64_t> shape) {
    Buffer& b = bufs.emplace_back(Device::CUDA, Arena::bytes_for(d, shape));
    return Tensor(b.data(), d, Device::CUDA, shape);
  };
  std::vector<Buffer> keep;
  auto take = [&](DType d, std::initializer_list<int64_t> shape) { return alloc_in(keep, d, shape); };
  const Tensor w_in = take(a, {W, D}), w_out = take(a, {D, Di}), conv_w = take(a, {Cd, K}), conv_b = take(a, {Cd}),
               norm_w = take(a, {Di}), A_log = take(f, {H}), Dp = take(f, {H}), dt_bias = take(f, {H});
  const Tensor g_in = take(f, {W, D}), g_out = take(f, {D, Di}), g_conv_w = take(f, {Cd, K}), g_conv_b = take(f, {Cd}),
               g_norm = take(f, {Di}), g_A = take(f, {H}), g_D = take(f, {H}), g_bias = take(f, {H});
  fill_normal(w_in, 1, 0, 0.f, 0.02f);
  fill_normal(w_out, 2, 0, 0.f, 0.02f);
  fill_normal(conv_w, 3, 0, 0.f, 0.3f);
  fill(conv_b, 0.01);
  fill(norm_w, 1.0);
  fill_normal(A_log, 4, 0, 1.0f, 0.5f);
  fill(Dp, 1.0);
  fill_normal(dt_bias, 5, 0, -2.0f, 0.5f);
  for (const Tensor* t : {&g_in, &g_out, &g_conv_w, &g_conv_b, &g_norm, &g_A, &g_D, &g_bias}) fill(*t, 0.0);
  nlohmann::json rows = nlohmann::json::array();
  for (const int64_t L : Ls) {
    nlohmann::json r{{"L", L}};
    try {
      const bool bwd = L <= 32768;
      std::vector<Buffer> acts;
      Arena arena;
      if (one_arena) {
        size_t bytes = 0;
        for (const int64_t cols : {D, W, Cd, Di, Di, D}) bytes += Arena::bytes_for(a, {1, L, cols});
        bytes += Arena::bytes_for(f, {L, Di / c.norm_group_size()});
        if (bwd)
          for (const int64_t cols : {D, Di, W, Di, Cd, D}) bytes += Arena::bytes_for(a, {1, L, cols});
        arena = Arena(Device::CUDA, bytes);
      }
      auto act = [&](DType d, std::initializer_list<int64_t> shape) {
        return one_arena ? arena.alloc(d, shape) : alloc_in(acts, d, shape);
      };
      const Tensor x = act(a, {1, L, D}), zx = act(a, {1, L, W}), xbc = act(a, {1, L, Cd}), y = act(a, {1, L, Di}),
                   yn = act(a, {1, L, Di}), rstd = act(f, {L, Di / c.norm_group_size()}), out = act(a, {1, L, D});
      fill_normal(x, 6, 0, 0.f, 1.f);
      const SsdParams p = mamba_ssd_params(c, xbc, zx.slice(-1, Di + Cd, H), A_log, Dp, dt_bias, Tensor{});
      const Tensor z = zx.slice(-1, 0, Di);
      auto forward = [&] {
        linear_forward(x, w_in, Tensor{}, zx);
        conv1d_silu_forward(zx.slice(-1, Di, Cd), conv_w, conv_b, Tensor{}, xbc);
        ssd_forward(p, y.split_last({H, P}), Tensor{});
        gated_rmsnorm_forward(y, z, norm_w, c.norm_group_size(), c.norm_eps, yn, rstd);
        linear_forward(yn, w_out, Tensor{}, out);
      };
      const int reps = L >= 131072 ? 3 : 10;
      const double tf = time_median(forward, 1, reps);
      r["fwd_ms"] = tf * 1e3;
      if (bwd) {
        const Tensor dout = act(a, {1, L, D}), dyn = act(a, {1, L, Di}), dzx = act(a, {1, L, W}), dy = act(a, {1, L, Di}),
                     dxbc = act(a, {1, L, Cd}), dx = act(a, {1, L, D});
        fill_normal(dout, 7, 0, 0.f, 1.f);
        SsdGrads g;
        g.dx = dxbc.slice(-1, 0, Di).split_last({H, P});
        g.dBm = dxbc.slice(-1, Di, GN).split_last({G, N});
        g.dCm = dxbc.slice(-1, Di + GN, GN).split_last({G, N});
        g.ddt = dzx.slice(-1, Di + Cd, H);
        g.dA_log = g_A;
        g.dD = g_D;
        g.ddt_bias = g_bias;
        auto backward = [&] {
          linear_backward(dout, yn, w_out, dyn, g_out, Tensor{}, false);
          gated_rmsnorm_backward(dyn, y, z, norm_w, rstd, c.norm_group_size(), dy, dzx.slice(-1, 0, Di), g_norm);
          ssd_backward(p, dy.split_last({H, P}), Tensor{}, g);
          conv1d_silu_backward(dxbc, zx.slice(-1, Di, Cd), conv_w, conv_b, Tensor{}, dzx.slice(-1, Di, Cd), g_conv_w,
                               g_conv_b);
          linear_backward(dzx, x, w_in, dx, g_in, Tensor{}, false);
        };
        const double tfb = time_median([&] { forward(); backward(); }, 1, reps);
        r["fwd_bwd_ms"] = tfb * 1e3;
        if (L == 2048 || L == 32768)
          r["fwd_bwd_profile"] = op_profile(fmt::format("the Mamba-2 layer alone, forward + backward, L = {}K{}{}",
                                                        L / 1024, Ls.size() == 1 ? " (run first)" : "",
                                                        one_arena ? ", one arena" : ""),
                                            [&] { forward(); backward(); }, profiles);
      }
    } catch (const Error& e) {
      if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
      device_synchronize(Device::CUDA);
      cuda::release_scratch();
      r["error"] = e.what();
      rows.push_back(r);
      break;
    }
    rows.push_back(r);
  }
  return rows;
}

void bench_layers() {
  const int64_t Ls[] = {2048, 8192, 32768, 131072, 262144};
  const double ref_mamba_fwd[] = {1.06, 3.40, 13.7, 55.4, 110};
  const double ref_attn_fwd[] = {0.32, 2.02, 18.9, 274, 1101};
  const double ref_mamba_fb[] = {7.93, 11.5, 45.7};
  const double ref_attn_fb[] = {1.23, 7.06, 69.0};
  nlohmann::json out = nlohmann::json::array();
  // The layer alone at 2K once more before anything else ran (round 10 saw its SSD kernels ~10 %
  // slower at the end of the sweep than the one-layer model's at its start): the first run here,
  // against the same bench's last, separates the GPU's state from the bench's buffers.
  std::string first_profile;
  const nlohmann::json alone_first = bench_mamba_layer_alone({2048}, &first_profile);
  const nlohmann::json alone_first_arena = bench_mamba_layer_alone({2048}, &first_profile, true);
  fmt::print("\n## One layer at the 8B shape, batch 1 (bf16): our Mamba-2 layer vs our attention layer\n");
  fmt::print("| L | Mamba-2 fwd | ref (fused) | attention fwd | ref | ratio attn/Mamba | Mamba-2 fwd+bwd | ref | attention fwd+bwd | ref |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|\n");
  Model mamba(layer_8b("M"), Device::CUDA, DType::BF16);
  Model attn(layer_8b("*"), Device::CUDA, DType::BF16);
  std::string profiles;  // printed after the table
  mamba.init_weights(1);
  attn.init_weights(1);
  for (int i = 0; i < 5; ++i) {
    const int64_t L = Ls[i];
    nlohmann::json r{{"L", L}};
    try {  // a length that does not fit the card (256K needs ~100 GB: not an H100) ends the sweep
      DeviceTokens tok(1, L, 256, true);
      ModelInput fwd_in = tok.in;
      fwd_in.targets = Tensor{};
      int reps = L >= 131072 ? 3 : 10;
      double tm = time_median([&] { mamba.forward(fwd_in); }, 1, reps);
      double ta = time_median([&] { attn.forward(fwd_in); }, 1, reps);
      r["mamba_fwd_ms"] = tm * 1e3;
      r["attn_fwd_ms"] = ta * 1e3;
      std::string fb = "| — | — | — | — |";
      if (i < 3) {
        double tmb = time_median([&] { mamba.zero_grads(); mamba.forward(tok.in); mamba.backward(1.0f); }, 1, reps);
        double tab = time_median([&] { attn.zero_grads(); attn.forward(tok.in); attn.backward(1.0f); }, 1, reps);
        r["mamba_fwd_bwd_ms"] = tmb * 1e3;
        r["attn_fwd_bwd_ms"] = tab * 1e3;
        fb = fmt::format("| {:.2f} | {:.2f} | {:.2f} | {:.2f} |", tmb * 1e3, ref_mamba_fb[i], tab * 1e3, ref_attn_fb[i]);
        if (i == 0 || i == 2) {  // the two lengths with fwd+bwd targets: where the Mamba-2 layer's time goes
          r["mamba_fwd_profile"] = op_profile(fmt::format("Mamba-2 layer forward, L = {}K", L / 1024),
                                              [&] { mamba.forward(fwd_in); }, &profiles);
          r["mamba_fwd_bwd_profile"] = op_profile(
              fmt::format("Mamba-2 layer forward + backward, L = {}K", L / 1024),
              [&] {
                mamba.zero_grads();
                mamba.forward(tok.in);
                mamba.backward(1.0f);
              },
              &profiles);
        }
      }
      fmt::print("| {}K | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.1f}× {}\n", L / 1024, tm * 1e3, ref_mamba_fwd[i], ta * 1e3,
                 ref_attn_fwd[i], ta / tm, fb);
      out.push_back(r);
    } catch (const Error& e) {
      if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
      device_synchronize(Device::CUDA);
      cuda::release_scratch();
      fmt::print("| {}K | — does not fit on this card ({}) |\n", L / 1024, e.what());
      r["error"] = e.what();
      out.push_back(r);
      break;
    }
  }
  // The layer alone (gpu.md's definition of the reference), next to the targets.
  const nlohmann::json alone = bench_mamba_layer_alone({2048, 8192, 32768, 131072, 262144}, &profiles);
  fmt::print("\n## The Mamba-2 layer alone (in_proj, conv, SSD, gated norm, out_proj: the reference's layer; "
             "weight gradients accumulated in fp32)\n| L | forward | ref (fused) | target | forward + backward | ref | target |\n"
             "|---|---|---|---|---|---|---|\n");
  const double fwd_target[] = {0.7, 0, 0, 0, 85}, fb_target[] = {2.5, 0, 30};
  for (size_t i = 0; i < alone.size(); ++i) {
    const nlohmann::json& r = alone[i];
    if (r.contains("error")) {
      fmt::print("| {}K | — does not fit on this card ({}) |\n", r["L"].get<int64_t>() / 1024, r["error"].get<std::string>());
      continue;
    }
    auto tgt = [](double t) { return t > 0 ? fmt::format("≤ {}", t) : std::string("—"); };
    fmt::print("| {}K | {:.2f} | {:.2f} | {} | {} | {} | {} |\n", r["L"].get<int64_t>() / 1024, r["fwd_ms"].get<double>(),
               ref_mamba_fwd[i], tgt(fwd_target[i]),
               r.contains("fwd_bwd_ms") ? fmt::format("{:.2f}", r["fwd_bwd_ms"].get<double>()) : "—",
               i < 3 ? fmt::format("{:.2f}", ref_mamba_fb[i]) : "—", i < 3 ? tgt(fb_target[i]) : "—");
  }
  for (const auto& [first, how] : {std::pair{&alone_first, "one allocation per tensor"},
                                   std::pair{&alone_first_arena, "one arena"}})
    if (!first->empty() && (*first)[0].contains("fwd_bwd_ms"))
      fmt::print("the layer alone at 2K, run first (before every other layer bench), {}: forward {:.2f} ms, "
                 "forward + backward {:.2f} ms\n",
                 how, (*first)[0]["fwd_ms"].get<double>(), (*first)[0]["fwd_bwd_ms"].get<double>());
  g_json["mamba_layer_alone"] = alone;
  g_json["mamba_layer_alone_first"] = alone_first;
  g_json["mamba_layer_alone_first_arena"] = alone_first_arena;
  profiles += first_profile;
  fmt::print("{}", profiles);
  g_json["layers"] = out;

  // One decode step of the Mamba-2 layer (mixer + its norm; the model's embedding / head are tiny).
  fmt::print("\n## One decode step of the 8B Mamba-2 layer (CUDA graph replay, host ids uploaded with the step)\n"
             "| batch | steps back to back | each step synchronised | reference (gpu.md, CUDA graph) | target |\n"
             "|---|---|---|---|---|\n");
  nlohmann::json dec = nlohmann::json::array();
  for (int64_t B : {1, 32}) {
    InferenceState st = mamba.new_state(B, 8);
    fill(st.layers[0].ssm, 0.01);
    fill(st.layers[0].conv, 0.01);
    std::vector<int32_t> host_ids(static_cast<size_t>(B), 3);
    Tensor idt(host_ids.data(), DType::I32, Device::CPU, {B});  // as the generator passes them
    auto step = [&] {
      st.length = 0;  // the state's length only bounds the KV caches, which a Mamba layer has none of
      mamba.decode(idt, st);
    };
    const double t = time_median(step, 3, 50);
    const double tb = time_back_to_back(step, 3, 200);
    fmt::print("| {} | {:.1f} µs | {:.1f} µs | {} µs | {} |\n", B, tb * 1e6, t * 1e6, B == 1 ? 86 : 166,
               B == 1 ? "≤ 60 µs" : "");
    nlohmann::json row{{"batch", B}, {"step_us", t * 1e6}, {"back_to_back_us", tb * 1e6}, {"graph", st.use_graph}};
    // Per-op view of one step run op by op (each op synchronised, so launch gaps are included).
    InferenceState st2 = mamba.new_state(B, 8);
    st2.use_graph = false;
    mamba.decode(idt, st2);
    Profile::reset();
    Profile::enable(true, /*device_sync=*/true);
    st2.length = 0;
    mamba.decode(idt, st2);
    Profile::enable(false);
    nlohmann::json ops = nlohmann::json::object();
    std::string line;
    for (const auto& [name, ot] : Profile::totals()) {
      ops[name] = ot.seconds * 1e6;
      line += fmt::format(" {} {:.1f}µs;", name, ot.seconds * 1e6);
    }
    row["ops_us_synchronised"] = ops;
    fmt::print("  batch {} op by op (synchronised):{}\n", B, line);
    dec.push_back(row);
  }
  g_json["mamba_decode_step"] = dec;
}

// ---------------------------------------------------------------------------------------------
// One decode step of the 8B Mamba-2 mixer alone, as gpu.md's reference times it: in_proj, conv
// update, state update, gated norm, out_proj, captured as one CUDA graph and replayed (no
// embedding, pre-norm, residual or head). The opt-in fused middle against the default (the three
// unfused ops), each its own graph, in the same run.
struct EnvSet {  // "" unsets
  EnvSet(const char* n, const char* v) : name(n) {
    if (*v)
      setenv(n, v, 1);
    else
      unsetenv(n);
  }
  ~EnvSet() { unsetenv(name); }
  const char* name;
};

void bench_mixer_step() {
  const ModelConfig c = layer_8b("M");
  const int64_t D = c.d_model, H = c.mamba_heads, P = c.mamba_head_dim, Di = c.d_inner(), Cd = c.conv_dim(),
                W = c.in_proj_dim(), K = c.conv_kernel;
  const DType a = DType::BF16;
  // The layer's weights, back to back (219 MB: every replay streams them from DRAM).
  Buffer wbuf(Device::CUDA, static_cast<size_t>((W * D + D * Di + Cd * K + Cd + Di) * 2 + 3 * H * 4));
  char* wp = static_cast<char*>(wbuf.data());
  auto carve = [&](DType d, std::initializer_list<int64_t> shape) {
    Tensor t(wp, d, Device::CUDA, Shape(shape.begin(), shape.size()));
    wp += t.nbytes();
    return t;
  };
  const Tensor w_in = carve(a, {W, D}), w_out = carve(a, {D, Di}), conv_w = carve(a, {Cd, K}), conv_b = carve(a, {Cd}),
               norm_w = carve(a, {Di}), A_log = carve(DType::F32, {H}), Dp = carve(DType::F32, {H}),
               dt_bias = carve(DType::F32, {H});
  fill_normal(w_in, 1, 0, 0.f, 0.02f);
  fill_normal(w_out, 2, 0, 0.f, 0.02f);
  fill_normal(conv_w, 3, 0, 0.f, 0.3f);
  fill(conv_b, 0.01);
  fill(norm_w, 1.0);
  fill(A_log, 0.5);
  fill(Dp, 1.0);
  fill(dt_bias, -1.0);
  const double floor_us = static_cast<double>((W * D + D * Di) * 2) / 4.2e12 * 1e6;
  fmt::print("\n## One decode step of the 8B Mamba-2 mixer alone (in_proj, conv, state update, gated norm, "
             "out_proj; CUDA graph replay)\n"
             "projection weights / 4.2 TB/s = {:.1f} µs\n"
             "| batch | default, back to back | fused | fused, one head per block | the two projections alone | "
             "reference (gpu.md, CUDA graph) | target |\n|---|---|---|---|---|---|---|\n",
             floor_us);
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t B : {1, 4, 8, 32}) {
    Buffer sbuf(Device::CUDA, static_cast<size_t>(B * (Cd * (K - 1) * 2 + H * P * c.ssm_state * 4 + D * 2 + W * 2 +
                                                       Cd * 2 + 2 * Di * 2 + Di * 4 + Di * 2 + D * 2) + 4096));
    char* sp = static_cast<char*>(sbuf.data());
    auto take = [&](DType d, std::initializer_list<int64_t> shape) {
      Tensor t(sp, d, Device::CUDA, Shape(shape.begin(), shape.size()));
      sp += (t.nbytes() + 255) / 256 * 256;
      return t;
    };
    const Tensor ssm = take(DType::F32, {B, H, P, c.ssm_state}), conv = take(a, {B, Cd, K - 1}), xn = take(a, {B, D}),
                 zx = take(a, {B, W}), yn = take(a, {B, Di}), out = take(a, {B, D});
    MambaStepWork work{take(a, {B, Cd}), take(a, {B, Di}), take(DType::F32, {B, Di / c.norm_group_size()})};
    fill(ssm, 0.01);
    fill(conv, 0.01);
    fill_normal(xn, 4, 0, 0.f, 1.f);
    MambaStepParams p = mamba_step_params(c);
    p.zx = zx;
    p.conv_w = conv_w;
    p.conv_b = conv_b;
    p.A_log = A_log;
    p.D = Dp;
    p.dt_bias = dt_bias;
    p.norm_w = norm_w;
    auto step = [&] {
      linear_forward(xn, w_in, Tensor{}, zx);
      mamba_step(p, conv, ssm, work, yn);
      linear_forward(yn, w_out, Tensor{}, out);
    };
    // Variants, each its own graph (the knobs are read when the graph is recorded): the middle
    // fused or not (HLM_MAMBA_STEP), heads per fused block.
    struct Variant {
      const char* key;
      const char* label;
      const char* step;
      const char* hpb;
    };
    const Variant variants[] = {
        {"default", "default (3 kernels: round 6's step)", "", ""},
        {"fused", "fused (HLM_MAMBA_STEP=2)", "2", ""},
        {"fused_hpb1", "fused, one head per block (16-block clusters)", "2", "1"},
        {"default_again", "default again (drift check)", "", ""},
    };
    nlohmann::json row{{"batch", B}, {"floor_us", floor_us}};
    std::map<std::string, double> tb;
    for (const Variant& v : variants) {
      EnvSet e1("HLM_MAMBA_STEP", v.step), e2("HLM_MAMBA_STEP_HPB", v.hpb);
      OpGraph g;
      g.record(Device::CUDA, step);
      const double b2b = time_back_to_back([&] { g.replay(); }, 5, 500);
      const double sync = time_median([&] { g.replay(); }, 3, 100);
      tb[v.key] = b2b;
      row[std::string(v.key) + "_back_to_back_us"] = b2b * 1e6;
      row[std::string(v.key) + "_sync_us"] = sync * 1e6;
      fmt::print("  batch {} {}: back to back {:.1f} µs, synchronised {:.1f} µs\n", B, v.label, b2b * 1e6, sync * 1e6);
    }
    // The middle alone, unfused and fused, each replayed back to back: the kernels' own cost,
    // without the projections around them (their chain effects are the difference to the step).
    for (const char* mode : {"0", "2"}) {
      EnvSet e1("HLM_MAMBA_STEP", mode);
      OpGraph gm;
      gm.record(Device::CUDA, [&] { mamba_step(p, conv, ssm, work, yn); });
      const double tm = time_back_to_back([&] { gm.replay(); }, 5, 500);
      row[std::string("middle_alone_") + (mode[0] == '0' ? "unfused" : "fused") + "_us"] = tm * 1e6;
      fmt::print("  batch {} the middle alone, {}: back to back {:.1f} µs\n", B, mode[0] == '0' ? "unfused" : "fused",
                 tm * 1e6);
    }
    // The two projections alone (nothing between them): the step with the mixer's middle free.
    OpGraph gp;
    gp.record(Device::CUDA, [&] {
      linear_forward(xn, w_in, Tensor{}, zx);
      linear_forward(yn, w_out, Tensor{}, out);
    });
    const double tproj = time_back_to_back([&] { gp.replay(); }, 5, 500);
    row["projections_only_us"] = tproj * 1e6;
    fmt::print("| {} | **{:.1f} µs** | {:.1f} µs | {:.1f} µs | {:.1f} µs | {} µs | {} |\n", B, tb["default"] * 1e6,
               tb["fused"] * 1e6, tb["fused_hpb1"] * 1e6, tproj * 1e6,
               B == 1 ? "86" : B == 32 ? "166" : "—", B == 1 ? "≤ 60 µs" : "");
    rows.push_back(row);
  }
  g_json["mamba_mixer_step"] = rows;
}

// ---------------------------------------------------------------------------------------------
ModelConfig decode_model(bool hybrid) {
  // The Mamba-2-Hybrid 8B pattern (design.md: 24 Mamba-2, 4 attention, 28 MLP) and an 8B-class
  // Transformer of the same width (32 attention + 32 MLP layers).
  ModelConfig c = layer_8b(hybrid ? "M-M-M--M-M*-M-M-M-M--M*-M-M-M-M-M*--M-M-M-M-M*-M--M-M-M-"
                                  : std::string("*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-*-"));
  c.vocab_size = 50304;
  return c;
}

void bench_decode(const std::vector<int64_t>& contexts, const std::vector<int64_t>& batches) {
  nlohmann::json out = nlohmann::json::array();
  std::map<std::pair<int64_t, int64_t>, double> hybrid_ms;
  for (bool hybrid : {true, false}) {
    ModelConfig c = decode_model(hybrid);
    Model m(c, Device::CUDA, DType::BF16, /*training=*/false);
    m.init_weights(2);
    const double weight_bytes = static_cast<double>(param_arena_numel(m.table())) * 2;
    const double floor_ms = weight_bytes / 4.2e12 * 1e3;
    fmt::print("\n## Decode, {} ({} layers: {} Mamba-2, {} attention, {} MLP; {:.2f}B parameters)\n",
               hybrid ? "8B-shaped hybrid" : "all-attention model of the same width", c.num_layers(),
               c.count(LayerKind::Mamba), c.count(LayerKind::Attention), c.count(LayerKind::Mlp), weight_bytes / 2e9);
    fmt::print("weight bytes / 4.2 TB/s = {:.2f} ms per step\n", floor_ms);
    fmt::print("| context | batch | ms / step | tokens/s | step / weight floor | back to back: ms / step | floor ratio |{}\n"
               "|---|---|---|---|---|---|---|{}\n",
               hybrid ? "" : " hybrid speed-up |", hybrid ? "" : "---|");
    for (int64_t ctx : contexts) {
      for (int64_t B : batches) {
        nlohmann::json r{{"model", hybrid ? "hybrid" : "attention"}, {"context", ctx}, {"batch", B}};
        const double kv = static_cast<double>(c.count(LayerKind::Attention)) * 2 * static_cast<double>(B) *
                          static_cast<double>(ctx + 64) * static_cast<double>(c.kv_heads * c.head_dim()) * 2;
        const double ssm = static_cast<double>(c.count(LayerKind::Mamba)) * static_cast<double>(B) *
                           static_cast<double>(c.d_inner() * c.ssm_state) * 4;
        if (kv + ssm > static_cast<double>(free_bytes()) * 0.9) {
          fmt::print("| {}K | {} | — (state {:.0f} GB does not fit) | | |{}\n", ctx / 1024, B, (kv + ssm) / 1e9,
                     hybrid ? "" : " |");
          r["error"] = "does not fit";
          out.push_back(r);
          continue;
        }
        InferenceState st = m.new_state(B, ctx + 64);
        for (auto& ls : st.layers) {
          if (ls.k_cache.defined()) {
            fill(ls.k_cache, 0.01);
            fill(ls.v_cache, 0.02);
          }
          if (ls.ssm.defined()) fill(ls.ssm, 0.01);
          if (ls.conv.defined()) fill(ls.conv, 0.01);
        }
        std::vector<int32_t> host_ids(static_cast<size_t>(B), 7);
        Tensor idt(host_ids.data(), DType::I32, Device::CPU, {B});
        st.length = ctx;
        double t = time_median([&] { m.decode(idt, st); }, 3, 20);
        const double tb = time_back_to_back([&] { m.decode(idt, st); }, 0, 20);
        r["step_ms"] = t * 1e3;
        r["back_to_back_ms"] = tb * 1e3;
        r["tokens_per_s"] = static_cast<double>(B) / t;
        r["floor_ratio"] = t * 1e3 / floor_ms;
        r["graph"] = st.use_graph;
        std::string extra;
        if (hybrid) {
          hybrid_ms[{ctx, B}] = t * 1e3;
        } else if (hybrid_ms.count({ctx, B})) {
          extra = fmt::format(" {:.2f}× |", t * 1e3 / hybrid_ms[{ctx, B}]);
          r["hybrid_speedup"] = t * 1e3 / hybrid_ms[{ctx, B}];
        } else {
          extra = " |";
        }
        fmt::print("| {}K | {} | {:.2f} | {:.0f} | {:.2f} | {:.2f} | {:.2f} |{}\n", ctx / 1024, B, t * 1e3,
                   static_cast<double>(B) / t, t * 1e3 / floor_ms, tb * 1e3, tb * 1e3 / floor_ms, extra);
        out.push_back(r);
      }
    }
  }
  g_json["decode"] = out;
}

}  // namespace

int main(int argc, char** argv) {
  bool train = false, layers = false, decode = false, mixer = false;
  std::string json_path;
  int steps = 5;
  std::vector<int64_t> contexts = {4096, 16384, 32768, 65536, 131072}, batches = {1, 8, 32, 64};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--train") train = true;
    else if (a == "--layers") layers = true;
    else if (a == "--decode") decode = true;
    else if (a == "--mixer") mixer = true;
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--quick") {
      contexts = {4096, 32768};
      batches = {1, 32};
    } else {
      fmt::print(stderr, "usage: bench_model_cuda [--train] [--layers] [--mixer] [--decode] [--quick] [--steps N] [--json FILE]\n");
      return 2;
    }
  }
  if (!cuda_available()) {
    fmt::print("skipped: no GPU\n");
    return 0;
  }
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  fmt::print("device: {} ({} SMs)\n", p.name, p.multiProcessorCount);
  g_json["device"] = p.name;
  try {
    if (train) bench_train(steps);
    if (layers) bench_layers();
    if (layers || mixer) bench_mixer_step();
    if (decode) bench_decode(contexts, batches);
  } catch (const Error& e) {
    fmt::print(stderr, "bench_model_cuda: error: {}\n", e.what());
    if (!json_path.empty()) std::ofstream(json_path) << g_json.dump(2);
    return 1;
  }
  if (!json_path.empty()) std::ofstream(json_path) << g_json.dump(2);
  return 0;
}
