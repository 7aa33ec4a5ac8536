// `hybridlm logits` and `hybridlm grads`: one full forward (and backward) over given token ids,
// written as safetensors — what the reference tests compare against transformers.
#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/memory.h"
#include "io/safetensors.h"
#include "ops/elementwise.h"
#include "ops/loss.h"

namespace hlm::cli {

namespace {

struct Flags {
  std::string model, tokens, out;
  RuntimeFlags rt;
};

// F32 host copy of any float tensor.
std::vector<float> host_f32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype == DType::F32) return to_host<float>(t);
  Buffer tmp(t.device, static_cast<size_t>(t.numel()) * sizeof(float));
  Tensor f = tmp.as(DType::F32, Shape(t.shape.data(), static_cast<size_t>(t.ndim)));
  convert(t, f);
  return to_host<float>(f);
}

struct Loaded {
  std::unique_ptr<Model> model;
  std::vector<int32_t> ids;
  Buffer dev;
  ModelInput in;
};

Loaded prepare(const Flags& f, bool with_targets) {
  Device device = f.rt.apply();
  Loaded L;
  std::string dir = resolve_model_dir(f.model);
  L.model = load_model(dir, device);
  const int64_t V = L.model->config().vocab_size;
  L.ids = parse_token_list(f.tokens, V);
  const int64_t T = static_cast<int64_t>(L.ids.size());
  if (with_targets) HLM_CHECK_ARG(T >= 2, "--tokens: gradients need at least 2 tokens (got {})", T);
  std::vector<int32_t> targets(static_cast<size_t>(T), kIgnoreIndex), pos(static_cast<size_t>(T));
  for (int64_t t = 0; t + 1 < T; ++t) targets[static_cast<size_t>(t)] = L.ids[static_cast<size_t>(t + 1)];
  for (int64_t t = 0; t < T; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(t);
  L.dev = Buffer(device, static_cast<size_t>(3 * T) * sizeof(int32_t));
  int32_t* base = static_cast<int32_t*>(L.dev.data());
  device_copy(base, device, L.ids.data(), Device::CPU, static_cast<size_t>(T) * sizeof(int32_t));
  device_copy(base + T, device, targets.data(), Device::CPU, static_cast<size_t>(T) * sizeof(int32_t));
  device_copy(base + 2 * T, device, pos.data(), Device::CPU, static_cast<size_t>(T) * sizeof(int32_t));
  L.in.ids = Tensor(base, DType::I32, device, {1, T});
  if (with_targets) L.in.targets = Tensor(base + T, DType::I32, device, {1, T});
  L.in.pos = Tensor(base + 2 * T, DType::I32, device, {1, T});
  return L;
}

void run_logits(const Flags& f) {
  Loaded L = prepare(f, false);
  L.model->forward(L.in);
  const int64_t T = static_cast<int64_t>(L.ids.size()), V = L.model->config().vocab_size;
  std::vector<float> logits = host_f32(L.model->logits());
  write_safetensors(f.out, {SafetensorsItem("logits", Tensor(logits.data(), DType::F32, Device::CPU, {T, V}))},
                    {{"producer", "hybridlm logits"}});
  fmt::print(stderr, "wrote logits [{}, {}] to {}\n", T, V, f.out);
}

void run_grads(const Flags& f) {
  Loaded L = prepare(f, true);
  Model& m = *L.model;
  m.zero_grads();
  double loss = m.forward(L.in);
  m.backward(1.0f);
  std::vector<float> grads = host_f32(m.grads());
  float loss_f = static_cast<float>(loss);
  std::vector<SafetensorsItem> items;
  items.emplace_back("loss", Tensor(&loss_f, DType::F32, Device::CPU, {1}));
  for (const ParamSpec& s : m.table())
    items.emplace_back(s.name, Tensor(grads.data() + s.offset, DType::F32, Device::CPU,
                                      Shape(s.shape.data(), s.shape.size())));
  write_safetensors(f.out, items, {{"producer", "hybridlm grads"}});
  fmt::print(stderr, "loss {:.6f}; wrote {} gradients to {}\n", loss, m.table().size(), f.out);
}

void add_common(CLI::App* cmd, Flags& f) {
  cmd->add_option("--model", f.model, "model folder (config.json + model.safetensors) or a train --out folder")
      ->required();
  cmd->add_option("--tokens", f.tokens, "token ids, e.g. \"12 34 56\"")->required();
  cmd->add_option("--out", f.out, "output .safetensors file")->required();
  f.rt.add(cmd);
}

}  // namespace

void add_logits_command(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("logits", "Write the logits [T, V] (float32) of one full forward as safetensors");
  add_common(cmd, *f);
  cmd->callback([f] { run_logits(*f); });
}

void add_grads_command(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "grads", "Write the gradient of the mean next-token cross-entropy w.r.t. every parameter (+ loss)");
  add_common(cmd, *f);
  cmd->callback([f] { run_grads(*f); });
}

}  // namespace hlm::cli
