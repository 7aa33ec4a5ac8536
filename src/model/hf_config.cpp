// HF config.json <-> ModelConfig. Defaults are transformers 5.17's (configuration_nemotron_h.py,
// configuration_mamba2.py); where the HF model ignores a config field, so do we (see
// docs/hf_compat.md).
#include "model/hf_config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>

#include "core/error.h"
#include "io/file.h"
#include "io/json.h"

namespace hlm {

namespace {

using nlohmann::json;

const char* type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "a list";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a float";
    default: return "an integer";
  }
}

// The value of the first of `keys` present (HF's legacy aliases win over the canonical name when
// both are given, as NemotronHConfig.__post_init__ pops them last), or nullptr.
const json* find_field(const json& j, std::initializer_list<const char*> keys, const char** which) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end()) {
      *which = k;
      return &*it;
    }
  }
  return nullptr;
}

int64_t get_int(const json& j, std::initializer_list<const char*> keys, int64_t def) {
  const char* k = nullptr;
  const json* v = find_field(j, keys, &k);
  if (!v) return def;
  HLM_CHECK_ARG(v->is_number_integer(), "field '{}' must be an integer, got {} ({})", k, type_of(*v), v->dump());
  return v->get<int64_t>();
}

// An int field HF allows to be null (pad/bos/eos ids, sliding_window, num_key_value_heads...).
std::optional<int64_t> get_opt_int(const json& j, std::initializer_list<const char*> keys,
                                   std::optional<int64_t> def) {
  const char* k = nullptr;
  const json* v = find_field(j, keys, &k);
  if (!v) return def;
  if (v->is_null()) return std::nullopt;
  HLM_CHECK_ARG(v->is_number_integer(), "field '{}' must be an integer or null, got {} ({})", k, type_of(*v),
                v->dump());
  return v->get<int64_t>();
}

double get_float(const json& j, std::initializer_list<const char*> keys, double def) {
  const char* k = nullptr;
  const json* v = find_field(j, keys, &k);
  if (!v) return def;
  HLM_CHECK_ARG(v->is_number(), "field '{}' must be a number, got {} ({})", k, type_of(*v), v->dump());
  return v->get<double>();
}

bool get_bool(const json& j, std::initializer_list<const char*> keys, bool def) {
  const char* k = nullptr;
  const json* v = find_field(j, keys, &k);
  if (!v) return def;
  HLM_CHECK_ARG(v->is_boolean(), "field '{}' must be true or false, got {} ({})", k, type_of(*v), v->dump());
  return v->get<bool>();
}

std::string get_string(const json& j, std::initializer_list<const char*> keys, const std::string& def) {
  const char* k = nullptr;
  const json* v = find_field(j, keys, &k);
  if (!v) return def;
  HLM_CHECK_ARG(v->is_string(), "field '{}' must be a string, got {} ({})", k, type_of(*v), v->dump());
  return v->get<std::string>();
}

// eos_token_id may be a list (generation stops at any): the first one is the model's EOS.
int64_t get_token_id(const json& j, const char* key, int64_t def) {
  auto it = j.find(key);
  if (it == j.end()) return def;
  if (it->is_null()) return -1;
  if (it->is_array()) {
    if (it->empty()) return -1;
    HLM_CHECK_ARG((*it)[0].is_number_integer(), "field '{}' must hold integers, got {}", key, it->dump());
    return (*it)[0].get<int64_t>();
  }
  HLM_CHECK_ARG(it->is_number_integer(), "field '{}' must be an integer, a list or null, got {}", key, it->dump());
  return it->get<int64_t>();
}

// [min, max] of time_step_limit (a list or tuple of two numbers; Infinity allowed).
std::pair<double, double> get_limit(const json& j, std::initializer_list<const char*> keys) {
  const char* k = nullptr;
  const json* v = find_field(j, keys, &k);
  if (!v) return {0.0, std::numeric_limits<double>::infinity()};
  HLM_CHECK_ARG(v->is_array() && v->size() == 2 && (*v)[0].is_number() && (*v)[1].is_number(),
                "field '{}' must be [min, max], got {}", k, dump_json(*v, -1));
  return {(*v)[0].get<double>(), (*v)[1].get<double>()};
}

// One layer-type name (new or legacy spelling) as a pattern symbol.
char layer_type_symbol(const std::string& name, size_t i) {
  if (name == "linear_attention" || name == "mamba") return 'M';
  if (name == "full_attention" || name == "attention") return '*';
  if (name == "mlp") return '-';
  if (name == "moe") return 'E';
  fail(ErrorKind::InvalidArgument,
       "layers_block_type[{}] = '{}' is not a layer type (linear_attention/mamba, "
       "full_attention/attention, mlp, moe)",
       i, name);
}

// Pattern with each layer as one of M * - (E fails in parse_pattern).
std::string normalise_pattern(const std::string& raw, const char* field) {
  return with_context(fmt::format("{} '{}'", field, raw), [&] {
    std::string p;
    for (LayerKind k : parse_pattern(raw)) p += layer_symbol(k);
    return p;
  });
}

void read_special_tokens(ModelConfig& c, const json& j, int64_t pad, int64_t bos, int64_t eos) {
  c.pad_token_id = get_token_id(j, "pad_token_id", pad);
  c.bos_token_id = get_token_id(j, "bos_token_id", bos);
  c.eos_token_id = get_token_id(j, "eos_token_id", eos);
}

void require_silu(const std::string& act, const char* field) {
  HLM_REQUIRE(act == "silu" || act == "swish", ErrorKind::Unsupported,
              "{} = '{}': only SiLU is supported for the Mamba-2 conv activation", field, act);
}

ModelConfig nemotron_h_from_json(const json& j) {
  ModelConfig c;
  c.model_type = "nemotron_h";

  // Layers: layers_block_type (new or legacy names) wins over hybrid_override_pattern, as in
  // NemotronHConfig.__post_init__; num_hidden_layers is ignored. The HF default contains 'moe'.
  auto lbt = j.find("layers_block_type");
  if (lbt == j.end()) lbt = j.find("layer_types");  // attribute_map alias
  if (lbt != j.end() && !lbt->is_null()) {
    HLM_CHECK_ARG(lbt->is_array(), "field 'layers_block_type' must be a list of layer types, got {}",
                  lbt->dump());
    std::string raw;
    for (size_t i = 0; i < lbt->size(); ++i) {
      HLM_CHECK_ARG((*lbt)[i].is_string(), "layers_block_type[{}] is not a string: {}", i, (*lbt)[i].dump());
      raw += layer_type_symbol((*lbt)[i].get<std::string>(), i);
    }
    c.pattern = normalise_pattern(raw, "layers_block_type as pattern");
  } else if (j.contains("hybrid_override_pattern")) {
    c.pattern = normalise_pattern(get_string(j, {"hybrid_override_pattern"}, ""), "hybrid_override_pattern");
  } else {
    c.pattern = normalise_pattern("ME*-", "default layers_block_type [linear_attention, moe, full_attention, mlp]");
  }

  const int64_t mtp = get_int(j, {"num_nextn_predict_layers"}, 0);
  HLM_REQUIRE(mtp == 0, ErrorKind::Unsupported,
              "num_nextn_predict_layers = {}: multi-token prediction layers are not supported yet", mtp);
  const auto window = get_opt_int(j, {"sliding_window"}, std::nullopt);
  HLM_REQUIRE(!window.has_value(), ErrorKind::Unsupported,
              "sliding_window = {}: sliding-window attention is not supported (transformers 5.17's "
              "NemotronH ignores it; hybridlm refuses rather than guess)",
              *window);

  c.vocab_size = get_int(j, {"vocab_size"}, 131072);
  c.d_model = get_int(j, {"hidden_size"}, 4096);
  c.norm_eps = static_cast<float>(get_float(j, {"layer_norm_epsilon"}, 1e-5));
  c.tie_embeddings = get_bool(j, {"tie_word_embeddings"}, false);
  c.residual_in_fp32 = get_bool(j, {"residual_in_fp32"}, false);
  c.initializer_range = static_cast<float>(get_float(j, {"initializer_range"}, 0.02));
  c.rescale_prenorm_residual = get_bool(j, {"rescale_prenorm_residual"}, true);

  c.mamba_heads = get_int(j, {"mamba_num_heads"}, 128);
  c.mamba_head_dim = get_int(j, {"mamba_head_dim"}, 64);
  c.ssm_state = get_int(j, {"ssm_state_size"}, 128);
  c.n_groups = get_int(j, {"mamba_n_groups", "n_groups"}, 8);
  c.conv_kernel = get_int(j, {"mamba_d_conv", "conv_kernel"}, 4);
  c.chunk_size = get_int(j, {"mamba_chunk_size", "chunk_size"}, 128);
  c.conv_bias = get_bool(j, {"mamba_conv_bias", "use_conv_bias"}, true);
  // in_proj / out_proj take their bias from use_bias; mamba_proj_bias is read by nothing.
  c.mamba_proj_bias = get_bool(j, {"use_bias"}, false);
  c.dt_min = static_cast<float>(get_float(j, {"mamba_dt_min", "time_step_min"}, 0.001));
  c.dt_max = static_cast<float>(get_float(j, {"mamba_dt_max", "time_step_max"}, 0.1));
  c.dt_init_floor = static_cast<float>(get_float(j, {"mamba_dt_init_floor", "time_step_floor"}, 1e-4));
  get_limit(j, {"mamba_dt_limit", "time_step_limit"});  // type-checked, then ignored like HF does
  // The mixer clamps with (time_step_min, inf), not with time_step_limit.
  c.dt_limit_min = c.dt_min;
  c.dt_limit_max = std::numeric_limits<float>::infinity();
  c.dt_limit_in_decode = false;
  require_silu(get_string(j, {"mamba_hidden_act"}, "silu"), "mamba_hidden_act");
  // Zamba2RMSNormGated(group_size = intermediate // n_groups).
  c.mamba_norm_group_size = c.n_groups > 0 ? c.mamba_heads * c.mamba_head_dim / c.n_groups : 0;

  c.attn_heads = get_int(j, {"num_attention_heads"}, 32);
  c.kv_heads = get_opt_int(j, {"num_key_value_heads"}, 8).value_or(c.attn_heads);
  // head_dim is a field of NemotronHConfig (default 128); older Hub configs name it
  // attention_head_dim, which transformers 5.17 no longer reads: we honour it when head_dim is absent.
  if (j.contains("head_dim") && !j["head_dim"].is_null()) c.attn_head_dim = get_int(j, {"head_dim"}, 128);
  else if (j.contains("attention_head_dim") && !j["attention_head_dim"].is_null())
    c.attn_head_dim = get_int(j, {"attention_head_dim"}, 128);
  else c.attn_head_dim = 128;
  c.attention_bias = false;  // NemotronHAttention builds q/k/v/o with bias=False whatever attention_bias says
  c.rope = false;            // and applies no rotary embedding
  get_bool(j, {"attention_bias"}, false);

  c.mlp_hidden = get_int(j, {"intermediate_size"}, 21504);
  std::string act = get_string(j, {"mlp_hidden_act"}, "relu2");
  c.mlp_activation = with_context("mlp_hidden_act", [&] { return activation_from_hf_name(act); });
  HLM_REQUIRE(c.mlp_activation != Activation::SwiGlu, ErrorKind::Unsupported,
              "mlp_hidden_act = '{}': NemotronH's MLP is not gated", act);
  c.mlp_bias = get_bool(j, {"mlp_bias"}, false);

  read_special_tokens(c, j, 0, 1, 2);
  return c;
}

ModelConfig mamba2_from_json(const json& j) {
  ModelConfig c;
  c.model_type = "mamba2";
  const int64_t layers = get_int(j, {"num_hidden_layers"}, 64);
  HLM_CHECK_ARG(layers > 0, "num_hidden_layers must be positive (got {})", layers);
  c.pattern = std::string(static_cast<size_t>(layers), 'M');

  c.vocab_size = get_int(j, {"vocab_size"}, 32768);
  c.d_model = get_int(j, {"hidden_size"}, 4096);
  c.norm_eps = static_cast<float>(get_float(j, {"layer_norm_epsilon"}, 1e-5));
  c.tie_embeddings = get_bool(j, {"tie_word_embeddings"}, false);
  c.residual_in_fp32 = get_bool(j, {"residual_in_fp32"}, true);
  c.initializer_range = static_cast<float>(get_float(j, {"initializer_range"}, 0.1));
  c.rescale_prenorm_residual = get_bool(j, {"rescale_prenorm_residual"}, false);

  c.mamba_heads = get_int(j, {"num_heads"}, 128);
  c.mamba_head_dim = get_int(j, {"head_dim"}, 64);
  const int64_t expand = get_int(j, {"expand"}, 2);
  HLM_CHECK_ARG(c.d_model * expand == c.mamba_heads * c.mamba_head_dim,
                "hidden_size * expand ({} * {} = {}) must equal num_heads * head_dim ({} * {} = {}) "
                "(Mamba2Config.validate_architecture)",
                c.d_model, expand, c.d_model * expand, c.mamba_heads, c.mamba_head_dim,
                c.mamba_heads * c.mamba_head_dim);
  c.ssm_state = get_int(j, {"state_size"}, 128);
  c.n_groups = get_int(j, {"n_groups"}, 8);
  c.conv_kernel = get_int(j, {"conv_kernel"}, 4);
  c.chunk_size = get_int(j, {"chunk_size"}, 256);
  c.mamba_proj_bias = get_bool(j, {"use_bias"}, false);
  c.conv_bias = get_bool(j, {"use_conv_bias"}, true);
  c.dt_min = static_cast<float>(get_float(j, {"time_step_min"}, 0.001));
  c.dt_max = static_cast<float>(get_float(j, {"time_step_max"}, 0.1));
  c.dt_init_floor = static_cast<float>(get_float(j, {"time_step_floor"}, 1e-4));
  auto [lo, hi] = get_limit(j, {"time_step_limit"});
  c.dt_limit_min = static_cast<float>(lo);
  c.dt_limit_max = static_cast<float>(hi);
  c.dt_limit_in_decode = false;
  require_silu(get_string(j, {"hidden_act"}, "silu"), "hidden_act");
  // MambaRMSNormGated normalises the whole d_inner width, whatever n_groups is.
  c.mamba_norm_group_size = c.mamba_heads * c.mamba_head_dim;

  c.attn_heads = c.kv_heads = c.attn_head_dim = 0;
  c.mlp_hidden = 0;
  read_special_tokens(c, j, 1, 0, 2);
  return c;
}

// The shortest decimal that reads back as the same float, as a double (1e-5f -> 1e-05, not
// 9.99999974737875e-06), so config.json holds the numbers a user wrote.
double float_for_json(float f) {
  if (!std::isfinite(f)) return static_cast<double>(f);
  return std::stod(fmt::format("{}", f));
}

json token_json(int64_t id) { return id < 0 ? json(nullptr) : json(id); }

}  // namespace

const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: break;
  }
  fail(ErrorKind::InvalidArgument, "{} is not a float dtype for model weights", dtype_name(t));
}

ModelConfig config_from_hf_json(const json& j) {
  HLM_CHECK_ARG(j.is_object(), "config is not a JSON object");
  auto mt = j.find("model_type");
  HLM_REQUIRE(mt != j.end(), ErrorKind::Unsupported,
              "config has no model_type: hybridlm reads transformers configs of model_type nemotron_h or "
              "mamba2 (a mamba_ssm config with d_model/n_layer needs converting)");
  HLM_CHECK_ARG(mt->is_string(), "field 'model_type' must be a string, got {}", mt->dump());
  const std::string type = mt->get<std::string>();
  ModelConfig c;
  if (type == "nemotron_h") c = nemotron_h_from_json(j);
  else if (type == "mamba2") c = mamba2_from_json(j);
  else fail(ErrorKind::Unsupported, "model_type '{}' is not supported (nemotron_h, mamba2)", type);
  c.validate();
  return c;
}

json config_to_hf_json(const ModelConfig& c, DType weights_dtype) {
  c.validate();
  const char* dtype = torch_dtype_name(weights_dtype);
  json j = json::object();
  const int64_t d_inner = c.d_inner();
  const bool has_mamba = c.count(LayerKind::Mamba) > 0;
  const bool has_attn = c.count(LayerKind::Attention) > 0;
  const bool has_mlp = c.count(LayerKind::Mlp) > 0;

  if (c.model_type == "mamba2") {
    HLM_REQUIRE(d_inner % c.d_model == 0, ErrorKind::Unsupported,
                "mamba2: d_inner {} is not a whole multiple of d_model {} (Mamba2Config's expand is an "
                "integer)",
                d_inner, c.d_model);
    HLM_REQUIRE(c.norm_group_size() == d_inner, ErrorKind::Unsupported,
                "mamba2: the gated norm group is {} wide but transformers' Mamba2 normalises all of "
                "d_inner ({}): use nemotron_h, or set mamba_norm_group_size = d_inner",
                c.norm_group_size(), d_inner);
    HLM_REQUIRE(!c.dt_limit_in_decode || (c.dt_limit_min == 0 && std::isinf(c.dt_limit_max)),
                ErrorKind::Unsupported, "mamba2: transformers never clamps dt in the decode step");
    j["architectures"] = {"Mamba2ForCausalLM"};
    j["model_type"] = "mamba2";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.d_model;
    j["num_hidden_layers"] = c.num_layers();
    j["num_heads"] = c.mamba_heads;
    j["head_dim"] = c.mamba_head_dim;
    j["expand"] = d_inner / c.d_model;
    j["state_size"] = c.ssm_state;
    j["n_groups"] = c.n_groups;
    j["conv_kernel"] = c.conv_kernel;
    j["chunk_size"] = c.chunk_size;
    j["use_bias"] = c.mamba_proj_bias;
    j["use_conv_bias"] = c.conv_bias;
    j["hidden_act"] = "silu";
    j["layer_norm_epsilon"] = float_for_json(c.norm_eps);
    j["residual_in_fp32"] = c.residual_in_fp32;
    j["rescale_prenorm_residual"] = c.rescale_prenorm_residual;
    j["initializer_range"] = float_for_json(c.initializer_range);
    j["time_step_rank"] = (c.d_model + 15) / 16;  // "auto", unused by the math
    j["time_step_min"] = float_for_json(c.dt_min);
    j["time_step_max"] = float_for_json(c.dt_max);
    j["time_step_floor"] = float_for_json(c.dt_init_floor);
    j["time_step_limit"] = {float_for_json(c.dt_limit_min), float_for_json(c.dt_limit_max)};
    j["tie_word_embeddings"] = c.tie_embeddings;
  } else {
    HLM_REQUIRE(!c.rope, ErrorKind::Unsupported,
                "nemotron_h: transformers' NemotronH attention has no rotary embedding (rope = true)");
    HLM_REQUIRE(!c.attention_bias, ErrorKind::Unsupported,
                "nemotron_h: transformers' NemotronH attention has no bias (attention_bias = true)");
    HLM_REQUIRE(!has_mlp || c.mlp_activation != Activation::SwiGlu, ErrorKind::Unsupported,
                "nemotron_h: transformers' NemotronH MLP is not gated (swiglu)");
    if (has_mamba) {
      HLM_REQUIRE(c.norm_group_size() * c.n_groups == d_inner, ErrorKind::Unsupported,
                  "nemotron_h: the gated norm group is {} wide but transformers uses d_inner / n_groups = {}",
                  c.norm_group_size(), d_inner / c.n_groups);
      HLM_REQUIRE(c.dt_limit_min == c.dt_min && std::isinf(c.dt_limit_max) && !c.dt_limit_in_decode,
                  ErrorKind::Unsupported,
                  "nemotron_h: transformers clamps dt to [time_step_min, inf) in the chunked scan and not "
                  "in decode; this config has limits ({}, {}){} with dt_min {}: set dt_limit_min = dt_min, "
                  "dt_limit_max = inf, dt_limit_in_decode = false",
                  c.dt_limit_min, c.dt_limit_max, c.dt_limit_in_decode ? " in decode too" : "", c.dt_min);
    }
    // Sizes of layer types the pattern does not use keep HF's defaults (they build nothing).
    const int64_t attn_heads = has_attn ? c.attn_heads : 32;
    const int64_t kv_heads = has_attn ? c.kv_heads : 8;
    const int64_t head_dim = has_attn ? c.head_dim() : 128;
    std::string pattern;
    json types = json::array();
    for (LayerKind k : c.layers()) {
      pattern += layer_symbol(k);
      types.push_back(k == LayerKind::Mamba ? "linear_attention" : k == LayerKind::Attention ? "full_attention" : "mlp");
    }
    j["architectures"] = {"NemotronHForCausalLM"};
    j["model_type"] = "nemotron_h";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.d_model;
    j["layers_block_type"] = types;
    j["hybrid_override_pattern"] = pattern;  // read by older transformers and remote code
    j["num_hidden_layers"] = c.num_layers();
    j["num_attention_heads"] = attn_heads;
    j["num_key_value_heads"] = kv_heads;
    j["head_dim"] = head_dim;
    j["attention_bias"] = false;
    j["sliding_window"] = nullptr;
    j["max_position_embeddings"] = 4096;  // unused: no position encoding
    j["intermediate_size"] = has_mlp ? c.mlp_hidden : 21504;
    j["mlp_hidden_act"] = activation_hf_name(c.mlp_activation);
    j["mlp_bias"] = c.mlp_bias;
    j["ssm_state_size"] = has_mamba ? c.ssm_state : 128;
    j["mamba_num_heads"] = has_mamba ? c.mamba_heads : 128;
    j["mamba_head_dim"] = has_mamba ? c.mamba_head_dim : 64;
    j["mamba_hidden_act"] = "silu";
    j["n_groups"] = has_mamba ? c.n_groups : 8;
    j["conv_kernel"] = c.conv_kernel;
    j["expand"] = has_mamba && d_inner % c.d_model == 0 ? d_inner / c.d_model : 2;  // unused by the mixer
    j["chunk_size"] = c.chunk_size;
    j["use_conv_bias"] = c.conv_bias;
    j["use_bias"] = c.mamba_proj_bias;
    j["mamba_proj_bias"] = c.mamba_proj_bias;  // what remote code reads; transformers reads use_bias
    j["time_step_min"] = float_for_json(c.dt_min);
    j["time_step_max"] = float_for_json(c.dt_max);
    j["time_step_floor"] = float_for_json(c.dt_init_floor);
    j["time_step_limit"] = {0.0, std::numeric_limits<double>::infinity()};
    j["num_nextn_predict_layers"] = 0;
    j["layer_norm_epsilon"] = float_for_json(c.norm_eps);
    j["residual_in_fp32"] = c.residual_in_fp32;
    j["rescale_prenorm_residual"] = c.rescale_prenorm_residual;
    j["initializer_range"] = float_for_json(c.initializer_range);
    // transformers 5.17's NemotronHForCausalLM never ties lm_head (_tied_weights_keys = {}); our
    // writer stores lm_head.weight beside the embeddings of a tied model so HF computes the same.
    j["tie_word_embeddings"] = c.tie_embeddings;
  }
  j["pad_token_id"] = token_json(c.pad_token_id);
  j["bos_token_id"] = token_json(c.bos_token_id);
  j["eos_token_id"] = token_json(c.eos_token_id);
  j["use_cache"] = true;
  j["dtype"] = dtype;        // transformers >= 4.56
  j["torch_dtype"] = dtype;  // older readers
  return j;
}

ModelConfig read_hf_config(const std::string& path) {
  std::error_code ec;
  const bool is_json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  std::string file = std::filesystem::is_directory(path, ec) || !is_json ? path + "/config.json" : path;
  json j = read_json_file(file);
  return with_context(file, [&] { return config_from_hf_json(j); });
}

void write_hf_config(const std::string& path, const ModelConfig& cfg, DType weights_dtype) {
  json j = with_context(path, [&] { return config_to_hf_json(cfg, weights_dtype); });
  write_file_atomic(path, dump_json(j, 2) + "\n");
}

}  // namespace hlm
