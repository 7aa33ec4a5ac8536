// Model weights <-> checkpoint folders (config.json + model.safetensors, or sharded with
// model.safetensors.index.json), in HF's Hub names: reads the prefixes backbone. and model.,
// converts F32/BF16/F16/F64 to the arena's dtype, and writes atomically in the Hub form.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"

namespace hlm {

// What a load did beyond copying the table's tensors.
struct CheckpointLoadInfo {
  std::string source;              // the file or index the weights came from
  int64_t tensors = 0;             // tensors copied into the arena
  int64_t bytes = 0;               // bytes of tensor data read
  std::vector<std::string> notes;  // keys deliberately not loaded, and why
};

// The Hub name a checkpoint key stands for: model.X and backbone.X both give backbone.X,
// backbone.embedding.weight gives backbone.embeddings.weight (both transformers' renamings),
// lm_head.X stays. Returns "" for keys transformers ignores on load (NemotronH's mtp.*).
std::string hub_param_name(const std::string& key, const std::string& model_type);

// config.json of a checkpoint folder (see hf_config.h).
ModelConfig load_checkpoint_config(const std::string& dir);

// Loads the weights of checkpoint folder (or .safetensors / .index.json file) `path` into `arena`,
// a contiguous CPU tensor of dtype F32 or F64 with at least param_arena_numel(table) elements, at
// the table's offsets (padding between tensors is zeroed). Tied embeddings: a checkpoint without
// lm_head.weight is normal; one with it is accepted when it equals the embeddings, and fails
// otherwise (transformers 5.17 then unties the model and uses the file's head).
// A checkpoint with missing, unexpected, mis-shaped or non-float tensors fails with ONE error that
// lists all of them.
CheckpointLoadInfo load_checkpoint_weights(const std::string& path, const ModelConfig& cfg,
                                           const std::vector<ParamSpec>& table, const Tensor& arena);

// Writes folder `dir` holding config.json and model.safetensors (Hub names with backbone.,
// tensors as `file_dtype`: F32, BF16, F16 or F64). Atomic: everything is written into a temp
// folder beside `dir`, which then replaces `dir` in one rename (an existing `dir` must hold only
// checkpoint files; it is swapped out and removed). A tied nemotron_h model also stores
// lm_head.weight (a copy of the embeddings), since transformers 5.17 never ties NemotronH.
void save_checkpoint(const std::string& dir, const ModelConfig& cfg, const std::vector<ParamSpec>& table,
                     const Tensor& arena, DType file_dtype = DType::F32);

}  // namespace hlm
