// Parameter tables per layer type, in Hub names.
#include "model/params.h"

#include <fmt/format.h>

namespace hlm {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

namespace {

constexpr int64_t kParamAlign = 64;  // elements; keeps every tensor 256-byte aligned in f32

struct Entry {
  const char* suffix;
  ParamRole role;
};

void add(std::vector<ParamSpec>& t, std::string name, std::vector<int64_t> shape, ParamRole role,
         int64_t layer) {
  t.push_back(ParamSpec{std::move(name), std::move(shape), role, layer, 0});
}

}  // namespace

std::vector<ParamSpec> param_table(const ModelConfig& c) {
  std::vector<ParamSpec> t;
  const int64_t D = c.d_model;
  add(t, "backbone.embeddings.weight", {c.vocab_size, D}, ParamRole::Embedding, -1);
  auto layers = c.layers();
  for (int64_t i = 0; i < static_cast<int64_t>(layers.size()); ++i) {
    std::string p = fmt::format("backbone.layers.{}.", i);
    add(t, p + "norm.weight", {D}, ParamRole::Norm, i);
    std::string m = p + "mixer.";
    switch (layers[static_cast<size_t>(i)]) {
      case LayerKind::Mamba: {
        const int64_t H = c.mamba_heads, Di = c.d_inner(), Cd = c.conv_dim();
        add(t, m + "in_proj.weight", {c.in_proj_dim(), D}, ParamRole::Linear, i);
        if (c.mamba_proj_bias) add(t, m + "in_proj.bias", {c.in_proj_dim()}, ParamRole::Bias, i);
        add(t, m + "conv1d.weight", {Cd, 1, c.conv_kernel}, ParamRole::ConvWeight, i);
        if (c.conv_bias) add(t, m + "conv1d.bias", {Cd}, ParamRole::ConvBias, i);
        add(t, m + "dt_bias", {H}, ParamRole::DtBias, i);
        add(t, m + "A_log", {H}, ParamRole::ALog, i);
        add(t, m + "D", {H}, ParamRole::D, i);
        add(t, m + "norm.weight", {Di}, ParamRole::Norm, i);
        add(t, m + "out_proj.weight", {D, Di}, ParamRole::OutProj, i);
        if (c.mamba_proj_bias) add(t, m + "out_proj.bias", {D}, ParamRole::Bias, i);
        break;
      }
      case LayerKind::Attention: {
        const int64_t E = c.head_dim(), Q = c.attn_heads * E, KV = c.kv_heads * E;
        add(t, m + "q_proj.weight", {Q, D}, ParamRole::Linear, i);
        if (c.attention_bias) add(t, m + "q_proj.bias", {Q}, ParamRole::Bias, i);
        add(t, m + "k_proj.weight", {KV, D}, ParamRole::Linear, i);
        if (c.attention_bias) add(t, m + "k_proj.bias", {KV}, ParamRole::Bias, i);
        add(t, m + "v_proj.weight", {KV, D}, ParamRole::Linear, i);
        if (c.attention_bias) add(t, m + "v_proj.bias", {KV}, ParamRole::Bias, i);
        add(t, m + "o_proj.weight", {D, Q}, ParamRole::OutProj, i);
        if (c.attention_bias) add(t, m + "o_proj.bias", {D}, ParamRole::Bias, i);
        break;
      }
      case LayerKind::Mlp: {
        const int64_t F = c.mlp_hidden;
        add(t, m + "up_proj.weight", {activation_input_width(c.mlp_activation, F), D}, ParamRole::Linear, i);
        if (c.mlp_bias) add(t, m + "up_proj.bias", {activation_input_width(c.mlp_activation, F)}, ParamRole::Bias, i);
        add(t, m + "down_proj.weight", {D, F}, ParamRole::OutProj, i);
        if (c.mlp_bias) add(t, m + "down_proj.bias", {D}, ParamRole::Bias, i);
        break;
      }
    }
  }
  add(t, "backbone.norm_f.weight", {D}, ParamRole::Norm, -1);
  if (!c.tie_embeddings) add(t, "lm_head.weight", {c.vocab_size, D}, ParamRole::Linear, -1);

  int64_t off = 0;
  for (auto& s : t) {
    s.offset = off;
    off += (s.numel() + kParamAlign - 1) / kParamAlign * kParamAlign;
  }
  return t;
}

int64_t param_arena_numel(const std::vector<ParamSpec>& table) {
  if (table.empty()) return 0;
  const auto& last = table.back();
  return (last.offset + last.numel() + kParamAlign - 1) / kParamAlign * kParamAlign;
}

int64_t count_non_embedding_params(const std::vector<ParamSpec>& table) {
  int64_t n = 0;
  for (const auto& s : table)
    if (s.role != ParamRole::Embedding && s.name != "lm_head.weight") n += s.numel();
  return n;
}

}  // namespace hlm
