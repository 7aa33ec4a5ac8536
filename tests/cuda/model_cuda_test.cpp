// The whole model on CUDA (BF16 activations, F32 master weights and gradients) against the CPU
// model (F32) with the same weights: loss, logits and every parameter's gradient agree within bf16
// tolerance; CUDA decode reproduces the CUDA full forward; a short CLI training run on the GPU
// follows the CPU run's losses; checkpoints move between devices.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "cuda_test_util.h"
#include "io/indexed_dataset.h"
#include "model/model.h"
#include "ops/loss.h"

namespace hlm {
namespace {

ModelConfig gpu_config() {
  ModelConfig c;
  c.pattern = "M*-M-*M-";
  c.vocab_size = 1000;
  c.d_model = 128;
  c.mamba_heads = 4;
  c.mamba_head_dim = 64;
  c.ssm_state = 64;
  c.n_groups = 2;
  c.chunk_size = 64;
  c.attn_heads = 4;
  c.kv_heads = 2;
  c.attn_head_dim = 64;
  c.mlp_hidden = 256;
  c.dt_limit_in_decode = true;
  c.validate();
  return c;
}

struct Inputs {
  int64_t B, T;
  std::vector<int32_t> ids, targets, doc, pos;
  Buffer dev;
  ModelInput host_input() {
    ModelInput in;
    in.ids = Tensor(ids.data(), DType::I32, Device::CPU, {B, T});
    in.targets = Tensor(targets.data(), DType::I32, Device::CPU, {B, T});
    in.doc = Tensor(doc.data(), DType::I32, Device::CPU, {B, T});
    in.pos = Tensor(pos.data(), DType::I32, Device::CPU, {B, T});
    return in;
  }
  ModelInput device_input() {
    const int64_t n = B * T;
    dev = Buffer(Device::CUDA, static_cast<size_t>(4 * n) * sizeof(int32_t));
    int32_t* p = static_cast<int32_t*>(dev.data());
    device_copy(p, Device::CUDA, ids.data(), Device::CPU, static_cast<size_t>(n) * 4);
    device_copy(p + n, Device::CUDA, targets.data(), Device::CPU, static_cast<size_t>(n) * 4);
    device_copy(p + 2 * n, Device::CUDA, doc.data(), Device::CPU, static_cast<size_t>(n) * 4);
    device_copy(p + 3 * n, Device::CUDA, pos.data(), Device::CPU, static_cast<size_t>(n) * 4);
    ModelInput in;
    in.ids = Tensor(p, DType::I32, Device::CUDA, {B, T});
    in.targets = Tensor(p + n, DType::I32, Device::CUDA, {B, T});
    in.doc = Tensor(p + 2 * n, DType::I32, Device::CUDA, {B, T});
    in.pos = Tensor(p + 3 * n, DType::I32, Device::CUDA, {B, T});
    return in;
  }
};

Inputs make_inputs(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Inputs x{B, T, {}, {}, {}, {}, {}};
  Rng rng(seed, 1);
  for (int64_t i = 0; i < B * T; ++i) x.ids.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(V))));
  for (int64_t i = 0; i < B * T; ++i)
    x.targets.push_back((i + 1) % T ? x.ids[static_cast<size_t>(i + 1)] : kIgnoreIndex);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) x.doc.push_back(b == 1 ? static_cast<int32_t>(t >= 77) + static_cast<int32_t>(t >= 150) : 0);
  x.pos = positions_from_docs(x.doc.data(), B, T);
  return x;
}

// CPU (F32) and CUDA (BF16) models with the same weights, scaled up so logits are O(1), and
// rounded to bf16 so the GPU's bf16 working copy holds the CPU's values exactly: what differs is
// then only the GPU's bf16 activations, not its weights.
void twin_models(Model& cpu, Model& gpu) {
  cpu.init_weights(7);
  float* w = cpu.params().ptr<float>();
  for (size_t i = 0; i < cpu.table().size(); ++i) {
    const ParamSpec& s = cpu.table()[i];
    if (s.role == ParamRole::Linear || s.role == ParamRole::Embedding || s.role == ParamRole::OutProj)
      for (int64_t j = 0; j < s.numel(); ++j) w[s.offset + j] *= 4.0f;
  }
  for (int64_t j = 0; j < cpu.params().numel(); ++j) w[j] = bf16_bits_to_f32(f32_to_bf16_bits(w[j]));
  copy_tensor(gpu.params(), cpu.params());
  gpu.sync_working_copy();
}

test::HostTensor host_f32(const Tensor& t) {
  test::HostTensor h = test::download(t);
  return test::convert_host(h, DType::F32);
}

TEST(ModelCuda, ForwardAndBackwardMatchTheCpuModel) {
  HLM_REQUIRE_GPU();
  ModelConfig cfg = gpu_config();
  Model cpu(cfg, Device::CPU, DType::F32), gpu(cfg, Device::CUDA, DType::BF16);
  twin_models(cpu, gpu);
  Inputs x = make_inputs(2, 200, cfg.vocab_size, 3);
  cpu.zero_grads();
  gpu.zero_grads();
  double lc = cpu.forward(x.host_input());
  ModelInput din = x.device_input();
  double lg = gpu.forward(din);
  EXPECT_TRUE(std::isfinite(lg));
  EXPECT_NEAR(lg, lc, 0.02 * std::fabs(lc)) << "loss cpu " << lc << " gpu " << lg;
  test::HostTensor a = host_f32(gpu.logits()), b = host_f32(cpu.logits());
  EXPECT_LT(test::rel_error(a, b), 3e-2);
  cpu.backward(1.0f);
  gpu.backward(1.0f);
  test::HostTensor gg = host_f32(gpu.grads()), gc = host_f32(cpu.grads());
  std::vector<std::pair<double, std::string>> worst;  // printed: how close the tensors come to the bound
  for (const ParamSpec& s : cpu.table()) {
    test::HostTensor ps(DType::F32, {s.numel()}), pc(DType::F32, {s.numel()});
    for (int64_t j = 0; j < s.numel(); ++j) {
      ps.set(j, gg.get(s.offset + j));
      pc.set(j, gc.get(s.offset + j));
    }
    // A_log, D and dt_bias have one entry per head: each is a sum over B·T·P terms that largely
    // cancel, so the bf16 rounding of the activations behind every term shows up several times
    // larger in their relative error than in the other tensors' (measured on the H200: the last
    // Mamba layer's dt_bias at 0.068–0.074 while everything else stays ≤ 0.023). Their values
    // are checked op by op against the CPU on identical bf16 inputs in the SSD backward tests.
    const bool per_head = s.role == ParamRole::ALog || s.role == ParamRole::D || s.role == ParamRole::DtBias;
    const double e = test::rel_error(ps, pc);
    EXPECT_LT(e, per_head ? 0.15 : 6e-2) << s.name;
    worst.emplace_back(e, s.name);
  }
  std::sort(worst.rbegin(), worst.rend());
  for (size_t k = 0; k < std::min<size_t>(4, worst.size()); ++k)
    std::printf("  gradient rel error %.4f  %s\n", worst[k].first, worst[k].second.c_str());
}

TEST(ModelCuda, DecodeReproducesTheFullForward) {
  HLM_REQUIRE_GPU();
  ModelConfig cfg = gpu_config();
  Model cpu(cfg, Device::CPU, DType::F32), gpu(cfg, Device::CUDA, DType::BF16);
  twin_models(cpu, gpu);
  const int64_t B = 2, T = 40, P = 17;
  Inputs x = make_inputs(B, T, cfg.vocab_size, 9);
  std::fill(x.doc.begin(), x.doc.end(), 1);
  for (int t = 0; t < 5; ++t) x.doc[static_cast<size_t>(T + t)] = 0;  // row 1 left-padded by 5
  x.pos = positions_from_docs(x.doc.data(), B, T);
  ModelInput full = x.device_input();
  gpu.forward(full);
  test::HostTensor want = host_f32(gpu.logits());  // [B,T,V]

  Inputs p{B, P, {}, {}, {}, {}, {}};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < P; ++t) {
      p.ids.push_back(x.ids[static_cast<size_t>(b * T + t)]);
      p.doc.push_back(x.doc[static_cast<size_t>(b * T + t)]);
      p.targets.push_back(kIgnoreIndex);
    }
  p.pos = positions_from_docs(p.doc.data(), B, P);
  InferenceState st = gpu.new_state(B, T);
  ModelInput pin = p.device_input();
  const int64_t V = cfg.vocab_size;
  test::HostTensor got(DType::F32, {B, T - P + 1, V}), ref(DType::F32, {B, T - P + 1, V});
  auto take = [&](const Tensor& lg, int64_t step) {
    test::HostTensor h = host_f32(lg);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v) {
        got.set((b * (T - P + 1) + step) * V + v, h.get(b * V + v));
        ref.set((b * (T - P + 1) + step) * V + v, want.get((b * T + P - 1 + step) * V + v));
      }
  };
  take(gpu.prefill(pin, st), 0);
  Buffer idbuf(Device::CUDA, static_cast<size_t>(B) * 4);
  for (int64_t t = P; t < T; ++t) {
    int32_t ids[2] = {x.ids[static_cast<size_t>(t)], x.ids[static_cast<size_t>(T + t)]};
    device_copy(idbuf.data(), Device::CUDA, ids, Device::CPU, sizeof(ids));
    take(gpu.decode(Tensor(idbuf.data(), DType::I32, Device::CUDA, {B}), st), t - P + 1);
  }
  EXPECT_LT(test::rel_error(got, ref), 3e-2);
}

using test::CmdResult;
CmdResult run(const std::string& args, bool stdout_only = false) { return test::run_binary(args, stdout_only); }

std::vector<double> losses(const std::string& metrics) {
  std::ifstream f(metrics);
  std::vector<double> out;
  std::string line;
  while (std::getline(f, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

TEST(ModelCuda, GpuTrainingFollowsTheCpuLossesAndCheckpointsMoveAcross) {
  HLM_REQUIRE_GPU();
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("hlm_gputrain_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    IndexedDatasetWriter w((dir / "data").string(), TokenDType::U16);
    Rng rng(11);
    for (int d = 0; d < 60; ++d) {
      std::vector<int32_t> doc;
      int64_t len = 20 + static_cast<int64_t>(rng.below(200));
      for (int64_t t = 0; t < len; ++t)
        doc.push_back(static_cast<int32_t>(t % 4 == 0 ? 1 + rng.below(499) : (doc.empty() ? 1 : (doc.back() * 7) % 499 + 1)));
      doc.push_back(0);
      w.add_document(doc);
    }
    w.finish();
  }
  std::string common = " --data " + (dir / "data").string() +
                       " --vocab 500 --pattern \"M*-M-\" --d-model 128 --mamba-heads 4 --mamba-head-dim 64 --d-state 64"
                       " --chunk 64 --attn-heads 2 --kv-heads 2 --head-dim 64 --mlp 256 --batch 4 --seq-len 128"
                       " --steps 20 --warmup 5 --lr 3e-3 --quiet";
  CmdResult c = run("train --device cpu --out " + (dir / "cpu").string() + common);
  ASSERT_EQ(c.code, 0) << c.out;
  CmdResult g = run("train --device cuda --out " + (dir / "gpu").string() + common);
  ASSERT_EQ(g.code, 0) << g.out;
  std::vector<double> lc = losses((dir / "cpu/metrics.jsonl").string()), lg = losses((dir / "gpu/metrics.jsonl").string());
  ASSERT_EQ(lc.size(), 20u);
  ASSERT_EQ(lg.size(), 20u);
  for (size_t i = 0; i < lc.size(); ++i) EXPECT_NEAR(lg[i], lc[i], 0.03 + 0.01 * lc[i]) << "step " << i + 1;
  EXPECT_LT(lg.back(), lg.front() - 0.5);
  // The GPU checkpoint runs on the CPU and the CPU checkpoint on the GPU.
  CmdResult a = run("generate --device cpu --model " + (dir / "gpu").string() + " --tokens \"1 2 3\" --temperature 0 --max-new-tokens 4 --json --no-stop");
  EXPECT_EQ(a.code, 0) << a.out;
  CmdResult b = run("generate --device cuda --model " + (dir / "cpu").string() + " --tokens \"1 2 3\" --temperature 0 --max-new-tokens 4 --json --no-stop");
  EXPECT_EQ(b.code, 0) << b.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace hlm
