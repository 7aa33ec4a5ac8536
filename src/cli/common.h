// Helpers shared by the subcommands: device and thread flags, token lists, model folders.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model.h"

namespace hlm::cli {

// --device cpu|cuda and --threads N on a subcommand.
struct RuntimeFlags {
  std::string device = "cpu";
  int threads = 0;
  void add(CLI::App* cmd);
  // Applies the thread count and checks the device; returns it.
  Device apply() const;
};

// "12 34 56" or "12,34,56" → ids; each must lie in [0, vocab) when vocab > 0.
std::vector<int32_t> parse_token_list(const std::string& text, int64_t vocab = 0);

// A model folder: the folder itself when it holds config.json, else the newest checkpoint under
// DIR/checkpoints (what `train --out DIR` writes).
std::string resolve_model_dir(const std::string& path);

// Loads config.json + weights of a model folder onto the device (F32 on the CPU, BF16 on CUDA).
std::unique_ptr<Model> load_model(const std::string& dir, Device device);

// The tokenizer of a model folder: --tokenizer when given, else DIR/tokenizer.json when present.
std::optional<std::string> find_tokenizer(const std::string& model_dir, const std::string& flag);

}  // namespace hlm::cli
