// HF config.json <-> ModelConfig for model_type nemotron_h (NemotronHForCausalLM) and mamba2
// (Mamba2ForCausalLM), as transformers 5.17's config classes read them: same defaults, same legacy
// aliases, and the same effective math (docs/hf_compat.md lists each field and quirk).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/dtype.h"
#include "model/config.h"

namespace hlm {

// Reads an HF config. Unsupported features (MoE layers, multi-token prediction, sliding-window
// attention, an unknown model_type, a non-SiLU Mamba activation) throw Unsupported; a field of the
// wrong type or a shape that does not add up throws InvalidArgument naming the field.
ModelConfig config_from_hf_json(const nlohmann::json& j);

// Writes a config.json that transformers 5.17 loads (AutoConfig / AutoModelForCausalLM) into a
// model with the same math. `weights_dtype` is the dtype the weights file holds ("dtype").
// Throws Unsupported for a ModelConfig the HF class cannot express (e.g. RoPE or attention bias
// in nemotron_h, a gated-norm group other than HF's).
nlohmann::json config_to_hf_json(const ModelConfig& cfg, DType weights_dtype = DType::F32);

// `path` is a config.json file or a folder holding one. Errors name the file.
ModelConfig read_hf_config(const std::string& path);
// Writes config.json atomically (`path` is the file).
void write_hf_config(const std::string& path, const ModelConfig& cfg, DType weights_dtype = DType::F32);

// torch's name of a dtype: float32, bfloat16, float16, float64.
const char* torch_dtype_name(DType t);

}  // namespace hlm
