// Layer pattern parsing and config validation.
#include "model/config.h"

#include <fmt/format.h>

#include <cmath>

#include "core/error.h"

namespace hlm {

char layer_symbol(LayerKind k) {
  switch (k) {
    case LayerKind::Mamba: return 'M';
    case LayerKind::Attention: return '*';
    case LayerKind::Mlp: return '-';
  }
  return '?';
}

const char* layer_name(LayerKind k) {
  switch (k) {
    case LayerKind::Mamba: return "mamba";
    case LayerKind::Attention: return "attention";
    case LayerKind::Mlp: return "mlp";
  }
  return "?";
}

std::vector<LayerKind> parse_pattern(const std::string& pattern) {
  std::vector<LayerKind> out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    switch (c) {
      case 'M': out.push_back(LayerKind::Mamba); break;
      case '*': out.push_back(LayerKind::Attention); break;
      case '-': out.push_back(LayerKind::Mlp); break;
      case '|': break;
      case 'E':
        fail(ErrorKind::Unsupported,
             "layer pattern '{}': position {} is 'E': MoE layers are not supported yet", pattern, i);
      default:
        fail(ErrorKind::InvalidArgument,
             "layer pattern '{}': unknown symbol '{}' at position {} (use M for Mamba-2, * for "
             "attention, - for MLP)",
             pattern, c, i);
    }
  }
  HLM_CHECK_ARG(!out.empty(), "layer pattern '{}' has no layers", pattern);
  return out;
}

int64_t ModelConfig::count(LayerKind k) const {
  int64_t n = 0;
  for (LayerKind l : layers()) n += l == k;
  return n;
}

void ModelConfig::validate() const {
  parse_pattern(pattern);
  HLM_CHECK_ARG(pattern.find('|') == std::string::npos,
                "config: pattern '{}' must be normalised (no '|')", pattern);
  HLM_CHECK_ARG(model_type == "nemotron_h" || model_type == "mamba2",
                "config: model_type '{}' is not supported (nemotron_h or mamba2)", model_type);
  HLM_CHECK_ARG(vocab_size > 0, "config: vocab_size must be positive (got {})", vocab_size);
  HLM_CHECK_ARG(d_model > 0, "config: hidden size d_model must be positive (got {})", d_model);
  HLM_CHECK_ARG(norm_eps > 0 && std::isfinite(norm_eps), "config: norm epsilon must be positive");
  bool has_mamba = count(LayerKind::Mamba) > 0;
  bool has_attn = count(LayerKind::Attention) > 0;
  bool has_mlp = count(LayerKind::Mlp) > 0;
  if (model_type == "mamba2")
    HLM_CHECK_ARG(!has_attn && !has_mlp, "config: a mamba2 model has only Mamba-2 layers, pattern is '{}'",
                  pattern);
  if (has_mamba) {
    HLM_CHECK_ARG(mamba_heads > 0 && mamba_head_dim > 0,
                  "config: Mamba heads ({}) and head dim ({}) must be positive", mamba_heads,
                  mamba_head_dim);
    HLM_CHECK_ARG(ssm_state > 0, "config: ssm state size must be positive (got {})", ssm_state);
    HLM_CHECK_ARG(n_groups > 0 && mamba_heads % n_groups == 0,
                  "config: Mamba groups ({}) must divide the Mamba heads ({})", n_groups, mamba_heads);
    HLM_CHECK_ARG(conv_kernel >= 1 && conv_kernel <= 16, "config: conv kernel {} out of range 1..16",
                  conv_kernel);
    HLM_CHECK_ARG(chunk_size >= 1, "config: chunk size must be positive (got {})", chunk_size);
    HLM_CHECK_ARG(norm_group_size() > 0 && d_inner() % norm_group_size() == 0,
                  "config: gated norm group size {} must divide d_inner {}", norm_group_size(),
                  d_inner());
    HLM_CHECK_ARG(dt_min > 0 && dt_max >= dt_min, "config: need 0 < dt_min <= dt_max (got {}, {})",
                  dt_min, dt_max);
    HLM_CHECK_ARG(dt_limit_min >= 0 && dt_limit_max > dt_limit_min,
                  "config: time_step_limit ({}, {}) is not an interval", dt_limit_min, dt_limit_max);
  }
  if (has_attn) {
    HLM_CHECK_ARG(attn_heads > 0 && kv_heads > 0, "config: attention heads ({}) and KV heads ({}) must be positive",
                  attn_heads, kv_heads);
    HLM_CHECK_ARG(attn_heads % kv_heads == 0,
                  "config: KV heads ({}) must divide attention heads ({})", kv_heads, attn_heads);
    HLM_CHECK_ARG(head_dim() > 0, "config: attention head dim must be positive");
    HLM_CHECK_ARG(attn_head_dim > 0 || d_model % attn_heads == 0,
                  "config: d_model {} is not a multiple of attention heads {} and no head_dim given",
                  d_model, attn_heads);
    if (rope) {
      HLM_CHECK_ARG(partial_rotary_factor > 0 && partial_rotary_factor <= 1,
                    "config: partial_rotary_factor {} out of (0, 1]", partial_rotary_factor);
      HLM_CHECK_ARG(rope_dim() % 2 == 0 && rope_dim() > 0, "config: rotary dim {} must be even",
                    rope_dim());
      HLM_CHECK_ARG(rope_theta > 0, "config: rope_theta must be positive");
    }
  }
  if (has_mlp) HLM_CHECK_ARG(mlp_hidden > 0, "config: MLP width must be positive (got {})", mlp_hidden);
  for (int64_t id : {bos_token_id, eos_token_id, pad_token_id})
    HLM_CHECK_ARG(id >= -1 && id < vocab_size, "config: special token id {} outside the vocabulary ({})",
                  id, vocab_size);
}

std::string ModelConfig::summary() const {
  std::string s = fmt::format("{}, {} layers ({}: {} Mamba-2, {} attention, {} MLP), d_model {}, vocab {}",
                              model_type, num_layers(), pattern, count(LayerKind::Mamba),
                              count(LayerKind::Attention), count(LayerKind::Mlp), d_model, vocab_size);
  if (count(LayerKind::Mamba))
    s += fmt::format(", mamba {}x{} state {} groups {}", mamba_heads, mamba_head_dim, ssm_state, n_groups);
  if (count(LayerKind::Attention))
    s += fmt::format(", attention {}/{}x{}{}", attn_heads, kv_heads, head_dim(), rope ? " rope" : "");
  if (count(LayerKind::Mlp)) s += fmt::format(", mlp {} {}", mlp_hidden, activation_hf_name(mlp_activation));
  return s;
}

const char* activation_hf_name(Activation a) {
  switch (a) {
    case Activation::ReluSquared: return "relu2";
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_pytorch_tanh";
    case Activation::Silu: return "silu";
    case Activation::SwiGlu: return "swiglu";
  }
  return "?";
}

Activation activation_from_hf_name(const std::string& name) {
  if (name == "relu2" || name == "squared_relu" || name == "relu_squared") return Activation::ReluSquared;
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    return Activation::GeluTanh;
  if (name == "silu" || name == "swish") return Activation::Silu;
  if (name == "swiglu") return Activation::SwiGlu;
  fail(ErrorKind::Unsupported, "activation '{}' is not supported (relu2, gelu, gelu_pytorch_tanh, silu, swiglu)",
       name);
}

}  // namespace hlm
