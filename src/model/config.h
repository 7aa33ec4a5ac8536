// Model configuration: every field of HF NemotronHConfig / Mamba2Config that changes the math, plus
// the layer pattern (Megatron's syntax: M Mamba-2, * attention, - MLP; '|' ignored; E rejected).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "ops/activation.h"

namespace hlm {

enum class LayerKind : uint8_t { Mamba, Attention, Mlp };
char layer_symbol(LayerKind k);
const char* layer_name(LayerKind k);

// Turns a pattern string into the layer list. Accepts M, *, - and ignores '|' (pipeline-stage
// separators in Megatron); 'E' fails with "MoE layers are not supported yet"; anything else fails
// naming the character and its position.
std::vector<LayerKind> parse_pattern(const std::string& pattern);

struct ModelConfig {
  std::string model_type = "nemotron_h";  // HF model_type written to config.json: nemotron_h | mamba2
  std::string pattern;                    // normalised: one of M * - per layer
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  float norm_eps = 1e-5f;
  bool tie_embeddings = false;
  bool residual_in_fp32 = true;
  float initializer_range = 0.02f;
  bool rescale_prenorm_residual = true;  // scale output projections' init by 1/sqrt(2·layers)

  // Mamba-2 mixer
  int64_t mamba_heads = 0;
  int64_t mamba_head_dim = 64;
  int64_t ssm_state = 128;
  int64_t n_groups = 1;
  int64_t conv_kernel = 4;
  int64_t chunk_size = 128;
  bool mamba_proj_bias = false;  // bias on in_proj / out_proj
  bool conv_bias = true;
  float dt_min = 0.001f, dt_max = 0.1f, dt_init_floor = 1e-4f;  // initialisation of dt_bias
  // Clamp of softplus(dt + bias) in the chunked scan (HF NemotronH: (time_step_min, inf)).
  float dt_limit_min = 0.0f;
  float dt_limit_max = std::numeric_limits<float>::infinity();
  // Whether the one-token decode step clamps dt to the limits too. transformers (both models) and
  // mamba_ssm clamp only in the chunked scan (prefill / training), never in the recurrent step:
  // false reproduces them, and differs only where softplus(dt + bias) leaves the limits.
  bool dt_limit_in_decode = false;
  int64_t mamba_norm_group_size = 0;  // gated RMSNorm group width; 0 = d_inner / n_groups

  // attention
  int64_t attn_heads = 0;
  int64_t kv_heads = 0;
  int64_t attn_head_dim = 0;  // 0 = d_model / attn_heads
  bool attention_bias = false;
  bool rope = false;
  float rope_theta = 10000.0f;
  float partial_rotary_factor = 1.0f;

  // MLP
  int64_t mlp_hidden = 0;
  Activation mlp_activation = Activation::ReluSquared;
  bool mlp_bias = false;

  // special tokens
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 0;
  int64_t pad_token_id = 0;

  // Derived sizes.
  int64_t num_layers() const { return static_cast<int64_t>(pattern.size()); }
  std::vector<LayerKind> layers() const { return parse_pattern(pattern); }
  int64_t d_inner() const { return mamba_heads * mamba_head_dim; }
  int64_t conv_dim() const { return d_inner() + 2 * n_groups * ssm_state; }
  int64_t in_proj_dim() const { return d_inner() + conv_dim() + mamba_heads; }  // [z | xBC | dt]
  int64_t norm_group_size() const {
    return mamba_norm_group_size > 0 ? mamba_norm_group_size : (n_groups > 0 ? d_inner() / n_groups : 0);
  }
  int64_t head_dim() const {
    return attn_head_dim > 0 ? attn_head_dim : (attn_heads > 0 ? d_model / attn_heads : 0);
  }
  int64_t rope_dim() const {
    return static_cast<int64_t>(static_cast<double>(head_dim()) * partial_rotary_factor);
  }
  int64_t count(LayerKind k) const;

  // Throws InvalidArgument naming the first field that does not add up.
  void validate() const;
  // One line: "nemotron_h, 8 layers (M*-M-...), d_model 256, ...".
  std::string summary() const;
};

const char* activation_hf_name(Activation a);  // relu2, gelu, gelu_pytorch_tanh, silu, swiglu
// Parses an HF activation name (relu2, gelu, gelu_new, gelu_pytorch_tanh, silu, swish, ...).
Activation activation_from_hf_name(const std::string& name);

}  // namespace hlm
