// Parameter tables: for a config, the list of parameters with their HF (Hub) names, shapes and
// roles, in arena order. Weights live in one flat arena carved by this table; a checkpoint is that
// arena in safetensors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace hlm {

enum class ParamRole : uint8_t {
  Embedding,  // normal(init_range)
  Norm,       // ones
  Linear,     // normal(init_range)
  OutProj,    // normal(init_range) / sqrt(2·layers) when rescale_prenorm_residual
  Bias,       // zeros
  ConvWeight, // uniform(±1/sqrt(K)), PyTorch's Conv1d default
  ConvBias,   // uniform(±1/sqrt(K))
  ALog,       // log U(1, 16)
  D,          // ones
  DtBias,     // inverse softplus of dt ~ log-uniform [dt_min, dt_max], floored
};

struct ParamSpec {
  std::string name;            // Hub name, e.g. "backbone.layers.3.mixer.in_proj.weight"
  std::vector<int64_t> shape;  // HF shape (conv1d.weight is [C, 1, K])
  ParamRole role;
  int64_t layer;               // -1 for embeddings / final norm / head
  int64_t offset = 0;          // elements into the flat arena
  int64_t numel() const;
  bool weight_decay() const { return role == ParamRole::Embedding || role == ParamRole::Linear ||
                                     role == ParamRole::OutProj || role == ParamRole::ConvWeight; }
};

// The full table (offsets filled, each tensor aligned to 64 elements).
std::vector<ParamSpec> param_table(const ModelConfig& cfg);
// Total elements of the flat arena for the table.
int64_t param_arena_numel(const std::vector<ParamSpec>& table);
// Non-embedding parameter count (what MFU formulas use).
int64_t count_non_embedding_params(const std::vector<ParamSpec>& table);

}  // namespace hlm
