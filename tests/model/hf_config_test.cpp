// model/hf_config: HF config.json files (Hub style, transformers 5.17 style, legacy aliases) map
// to the ModelConfig transformers would compute with, with its defaults; unsupported features fail
// clearly; config_to_hf_json round-trips and refuses what HF cannot express; the configs
// transformers wrote (tests/data/hf) parse, and it accepted the ones we wrote.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/file.h"
#include "io/json.h"
#include "model/hf_config.h"
#include "model/params.h"
#include "test_util.h"

namespace hlm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Every field, so two configs compare completely.
std::string all_fields(const ModelConfig& c) {
  return fmt::format(
      "{} {} V{} D{} eps{} tie{} res32{} init{} rescale{} | M {}x{} N{} G{} K{} Q{} pbias{} cbias{} dt[{},{}] "
      "floor{} lim[{},{}] dec{} ng{} | A {}/{}x{} bias{} rope{} th{} prf{} | F{} {} bias{} | tok {} {} {}",
      c.model_type, c.pattern, c.vocab_size, c.d_model, c.norm_eps, c.tie_embeddings, c.residual_in_fp32,
      c.initializer_range, c.rescale_prenorm_residual, c.mamba_heads, c.mamba_head_dim, c.ssm_state, c.n_groups,
      c.conv_kernel, c.chunk_size, c.mamba_proj_bias, c.conv_bias, c.dt_min, c.dt_max, c.dt_init_floor,
      c.dt_limit_min, c.dt_limit_max, c.dt_limit_in_decode, c.norm_group_size(), c.attn_heads, c.kv_heads,
      c.attn_head_dim, c.attention_bias, c.rope, c.rope_theta, c.partial_rotary_factor, c.mlp_hidden,
      activation_hf_name(c.mlp_activation), c.mlp_bias, c.pad_token_id, c.bos_token_id, c.eos_token_id);
}

template <typename F>
std::string error_of(F&& f, ErrorKind* kind = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack) << "\nmissing: " << (needle)

// Nemotron-H 8B's config.json as published on the Hub (remote-code era field names).
json nemotron_h_8b_hub() {
  return parse_json(R"({
    "architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
    "attention_bias": false, "attention_dropout": 0.0, "attention_head_dim": 128,
    "bos_token_id": 1, "chunk_size": 128, "conv_kernel": 4, "eos_token_id": 2, "expand": 2,
    "hidden_dropout": 0.0, "hidden_size": 4096,
    "hybrid_override_pattern": "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
    "initializer_range": 0.02, "intermediate_size": 21504, "layer_norm_epsilon": 1e-05,
    "mamba_head_dim": 64, "mamba_hidden_act": "silu", "mamba_num_heads": 128, "mamba_proj_bias": false,
    "max_position_embeddings": 8192, "mlp_bias": false, "mlp_hidden_act": "relu2", "n_groups": 8,
    "num_attention_heads": 32, "num_hidden_layers": 52, "num_key_value_heads": 8, "pad_token_id": 0,
    "rescale_prenorm_residual": true, "residual_in_fp32": false, "ssm_state_size": 128,
    "tie_word_embeddings": false, "time_step_floor": 0.0001, "time_step_limit": [0.0, Infinity],
    "time_step_max": 0.1, "time_step_min": 0.001, "torch_dtype": "bfloat16", "use_bias": false,
    "use_cache": true, "use_conv_bias": true, "use_mamba_kernels": true, "vocab_size": 131072})",
                    "hub");
}

TEST(HfConfig, NemotronH8BFromTheHub) {
  ModelConfig c = config_from_hf_json(nemotron_h_8b_hub());
  EXPECT_EQ(c.model_type, "nemotron_h");
  EXPECT_EQ(c.num_layers(), 52);
  EXPECT_EQ(c.count(LayerKind::Mamba), 24);
  EXPECT_EQ(c.count(LayerKind::Attention), 4);
  EXPECT_EQ(c.count(LayerKind::Mlp), 24);
  EXPECT_EQ(c.d_model, 4096);
  EXPECT_EQ(c.vocab_size, 131072);
  EXPECT_EQ(c.mamba_heads, 128);
  EXPECT_EQ(c.mamba_head_dim, 64);
  EXPECT_EQ(c.ssm_state, 128);
  EXPECT_EQ(c.n_groups, 8);
  EXPECT_EQ(c.norm_group_size(), 8192 / 8);  // Zamba2RMSNormGated(group_size = d_inner / n_groups)
  EXPECT_EQ(c.attn_heads, 32);
  EXPECT_EQ(c.kv_heads, 8);
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.mlp_hidden, 21504);
  EXPECT_EQ(c.mlp_activation, Activation::ReluSquared);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_FALSE(c.rope);
  EXPECT_FALSE(c.attention_bias);
  // The mixer clamps dt to (time_step_min, inf), not time_step_limit, and never in decode.
  EXPECT_EQ(c.dt_limit_min, 0.001f);
  EXPECT_TRUE(std::isinf(c.dt_limit_max));
  EXPECT_FALSE(c.dt_limit_in_decode);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  // The parameter table matches the published 8B size (8.1B with embeddings and head).
  auto table = param_table(c);
  int64_t total = 0;
  for (const auto& p : table) total += p.numel();
  EXPECT_GT(total, 8'000'000'000);
  EXPECT_LT(total, 8'300'000'000);
}

TEST(HfConfig, NemotronHDefaultsAreTransformers) {
  ModelConfig c = config_from_hf_json({{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "M*-"}});
  EXPECT_EQ(c.vocab_size, 131072);
  EXPECT_EQ(c.d_model, 4096);
  EXPECT_EQ(c.attn_heads, 32);
  EXPECT_EQ(c.kv_heads, 8);
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.mlp_hidden, 21504);
  EXPECT_EQ(c.mamba_heads, 128);
  EXPECT_EQ(c.mamba_head_dim, 64);
  EXPECT_EQ(c.n_groups, 8);
  EXPECT_EQ(c.chunk_size, 128);
  EXPECT_EQ(c.conv_kernel, 4);
  EXPECT_TRUE(c.conv_bias);
  EXPECT_FALSE(c.mamba_proj_bias);
  EXPECT_FALSE(c.residual_in_fp32);
  EXPECT_TRUE(c.rescale_prenorm_residual);
  EXPECT_FLOAT_EQ(c.initializer_range, 0.02f);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.dt_limit_min, 0.001f);
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  // num_key_value_heads null means as many as the query heads.
  ModelConfig mha = config_from_hf_json(
      {{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "*"}, {"num_key_value_heads", nullptr}});
  EXPECT_EQ(mha.kv_heads, 32);
}

TEST(HfConfig, NemotronHLayerListsAliasesAndIgnoredFields) {
  // transformers 5 names; legacy names; layers_block_type wins over hybrid_override_pattern.
  json j = {{"model_type", "nemotron_h"},
            {"layers_block_type", {"linear_attention", "full_attention", "mlp", "mamba", "attention"}},
            {"hybrid_override_pattern", "MMMMM"},
            {"num_hidden_layers", 99}};
  EXPECT_EQ(config_from_hf_json(j).pattern, "M*-M*");
  json alias = {{"model_type", "nemotron_h"}, {"layer_types", {"mlp", "linear_attention"}}};
  EXPECT_EQ(config_from_hf_json(alias).pattern, "-M");
  // Legacy mamba_* aliases win over the canonical names, as NemotronHConfig.__post_init__ does.
  json legacy = {{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "M"}, {"mamba_n_groups", 4},
                 {"n_groups", 8}, {"mamba_d_conv", 3}, {"mamba_chunk_size", 64}, {"mamba_conv_bias", false},
                 {"mamba_dt_min", 0.005}, {"mamba_dt_max", 0.2}, {"mamba_dt_init_floor", 0.001},
                 {"mamba_dt_limit", {0.0, 1.0}}};
  ModelConfig l = config_from_hf_json(legacy);
  EXPECT_EQ(l.n_groups, 4);
  EXPECT_EQ(l.conv_kernel, 3);
  EXPECT_EQ(l.chunk_size, 64);
  EXPECT_FALSE(l.conv_bias);
  EXPECT_FLOAT_EQ(l.dt_min, 0.005f);
  EXPECT_FLOAT_EQ(l.dt_max, 0.2f);
  EXPECT_FLOAT_EQ(l.dt_init_floor, 0.001f);
  EXPECT_FLOAT_EQ(l.dt_limit_min, 0.005f);  // time_step_limit / mamba_dt_limit are not what the mixer uses
  EXPECT_TRUE(std::isinf(l.dt_limit_max));
  // in/out_proj bias follows use_bias; mamba_proj_bias and attention_bias build nothing in HF.
  json bias = {{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "M*"}, {"use_bias", true},
               {"mamba_proj_bias", false}, {"attention_bias", true}};
  ModelConfig b = config_from_hf_json(bias);
  EXPECT_TRUE(b.mamba_proj_bias);
  EXPECT_FALSE(b.attention_bias);
  // head_dim wins; attention_head_dim (older Hub configs) is read when head_dim is absent.
  json hd = {{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "*"}, {"attention_head_dim", 64}};
  EXPECT_EQ(config_from_hf_json(hd).head_dim(), 64);
  hd["head_dim"] = 96;
  EXPECT_EQ(config_from_hf_json(hd).head_dim(), 96);
  // eos_token_id may be a list; null ids are -1.
  json tok = {{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "M"}, {"eos_token_id", {11, 2}},
              {"pad_token_id", nullptr}};
  ModelConfig t = config_from_hf_json(tok);
  EXPECT_EQ(t.eos_token_id, 11);
  EXPECT_EQ(t.pad_token_id, -1);
}

TEST(HfConfig, Mamba2DefaultsAndQuirks) {
  ModelConfig c = config_from_hf_json({{"model_type", "mamba2"}});
  EXPECT_EQ(c.pattern, std::string(64, 'M'));
  EXPECT_EQ(c.d_model, 4096);
  EXPECT_EQ(c.vocab_size, 32768);
  EXPECT_EQ(c.mamba_heads, 128);
  EXPECT_EQ(c.mamba_head_dim, 64);
  EXPECT_EQ(c.ssm_state, 128);
  EXPECT_EQ(c.n_groups, 8);
  EXPECT_EQ(c.chunk_size, 256);
  // MambaRMSNormGated normalises all of d_inner, whatever n_groups says.
  EXPECT_EQ(c.norm_group_size(), c.d_inner());
  EXPECT_TRUE(c.residual_in_fp32);
  EXPECT_FALSE(c.rescale_prenorm_residual);
  EXPECT_FLOAT_EQ(c.initializer_range, 0.1f);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.pad_token_id, 1);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.dt_limit_min, 0.0f);
  EXPECT_TRUE(std::isinf(c.dt_limit_max));
  // Mamba2 clamps with time_step_limit (Infinity as Python writes it, or transformers 5's object).
  ModelConfig lim = config_from_hf_json(parse_json(
      R"({"model_type": "mamba2", "hidden_size": 64, "num_heads": 8, "head_dim": 16, "n_groups": 2,
          "num_hidden_layers": 2, "time_step_limit": [0.01, {"__float__": "Infinity"}],
          "tie_word_embeddings": true, "use_bias": true, "use_conv_bias": false})", "m"));
  EXPECT_EQ(lim.dt_limit_min, 0.01f);
  EXPECT_TRUE(std::isinf(lim.dt_limit_max));
  EXPECT_EQ(lim.norm_group_size(), 128);
  EXPECT_TRUE(lim.tie_embeddings);
  EXPECT_TRUE(lim.mamba_proj_bias);
  EXPECT_FALSE(lim.conv_bias);
  // num_heads * head_dim must equal expand * hidden_size (Mamba2Config.validate_architecture).
  EXPECT_HAS(error_of([] { config_from_hf_json({{"model_type", "mamba2"}, {"hidden_size", 100}}); }),
             "hidden_size * expand");
}

TEST(HfConfig, UnsupportedAndMalformedConfigsFailClearly) {
  struct Case {
    json j;
    ErrorKind kind;
    const char* fragment;
  };
  json base = {{"model_type", "nemotron_h"}, {"hybrid_override_pattern", "M*-"}};
  auto with = [&](const char* k, json v) {
    json j = base;
    j[k] = std::move(v);
    return j;
  };
  std::vector<Case> cases = {
      {with("hybrid_override_pattern", "M*E-"), ErrorKind::Unsupported, "MoE"},
      {{{"model_type", "nemotron_h"}, {"layers_block_type", {"mamba", "moe"}}}, ErrorKind::Unsupported, "MoE"},
      {{{"model_type", "nemotron_h"}}, ErrorKind::Unsupported, "MoE"},  // HF's default layer list has moe
      {with("num_nextn_predict_layers", 1), ErrorKind::Unsupported, "multi-token prediction"},
      {with("sliding_window", 4096), ErrorKind::Unsupported, "sliding-window"},
      {{{"model_type", "llama"}}, ErrorKind::Unsupported, "model_type 'llama'"},
      {{{"d_model", 768}, {"n_layer", 24}}, ErrorKind::Unsupported, "no model_type"},
      {with("hybrid_override_pattern", "M*X"), ErrorKind::InvalidArgument, "unknown symbol 'X'"},
      {with("hybrid_override_pattern", ""), ErrorKind::InvalidArgument, "no layers"},
      {{{"model_type", "nemotron_h"}, {"layers_block_type", {"mamba", "conv"}}}, ErrorKind::InvalidArgument,
       "layers_block_type[1] = 'conv'"},
      {with("hidden_size", "big"), ErrorKind::InvalidArgument, "field 'hidden_size' must be an integer"},
      {with("tie_word_embeddings", 1), ErrorKind::InvalidArgument, "'tie_word_embeddings' must be true or false"},
      {with("layer_norm_epsilon", "tiny"), ErrorKind::InvalidArgument, "'layer_norm_epsilon' must be a number"},
      {with("mamba_hidden_act", "gelu"), ErrorKind::Unsupported, "only SiLU"},
      {with("mlp_hidden_act", "swiglu"), ErrorKind::Unsupported, "not gated"},
      {with("mlp_hidden_act", "tanh"), ErrorKind::Unsupported, "activation 'tanh'"},
      {with("n_groups", 3), ErrorKind::InvalidArgument, "groups (3) must divide"},
      {with("num_key_value_heads", 5), ErrorKind::InvalidArgument, "KV heads (5) must divide"},
      {with("time_step_limit", {1}), ErrorKind::InvalidArgument, "'time_step_limit' must be [min, max]"},
      {json::array(), ErrorKind::InvalidArgument, "not a JSON object"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.j.dump());
    ErrorKind kind = ErrorKind::Internal;
    std::string msg = error_of([&] { config_from_hf_json(c.j); }, &kind);
    EXPECT_HAS(msg, c.fragment);
    EXPECT_EQ(static_cast<int>(kind), static_cast<int>(c.kind)) << msg;
  }
}

ModelConfig small_nemotron_h() {
  ModelConfig c;
  c.model_type = "nemotron_h";
  c.pattern = "M*-M";
  c.vocab_size = 300;
  c.d_model = 40;
  c.mamba_heads = 4;
  c.mamba_head_dim = 12;
  c.ssm_state = 16;
  c.n_groups = 2;
  c.chunk_size = 32;
  c.dt_min = 0.003f;
  c.dt_limit_min = 0.003f;
  c.attn_heads = 4;
  c.kv_heads = 2;
  c.attn_head_dim = 12;
  c.mlp_hidden = 80;
  c.mlp_activation = Activation::GeluTanh;
  c.mlp_bias = true;
  c.mamba_proj_bias = true;
  c.conv_bias = false;
  c.residual_in_fp32 = false;
  c.norm_eps = 1e-6f;
  c.pad_token_id = -1;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

TEST(HfConfig, RoundTripsThroughConfigJson) {
  ModelConfig nh = small_nemotron_h();
  ModelConfig m2 = config_from_hf_json({{"model_type", "mamba2"}, {"hidden_size", 64}, {"num_heads", 8},
                                        {"head_dim", 16}, {"num_hidden_layers", 3}, {"n_groups", 1},
                                        {"time_step_limit", {0.0, 2.0}}, {"tie_word_embeddings", true}});
  ModelConfig hub = config_from_hf_json(nemotron_h_8b_hub());
  for (const ModelConfig& c : {nh, m2, hub}) {
    json j = config_to_hf_json(c, DType::BF16);
    EXPECT_EQ(j["dtype"], "bfloat16");
    EXPECT_EQ(j["torch_dtype"], "bfloat16");
    // Through text, as a file would go.
    ModelConfig back = config_from_hf_json(parse_json(dump_json(j), "round trip"));
    EXPECT_EQ(all_fields(back), all_fields(c));
  }
  json j = config_to_hf_json(nh);
  EXPECT_EQ(j["architectures"][0], "NemotronHForCausalLM");
  EXPECT_EQ(j["hybrid_override_pattern"], "M*-M");
  EXPECT_EQ(j["layers_block_type"], json({"linear_attention", "full_attention", "mlp", "linear_attention"}));
  EXPECT_EQ(j["mlp_hidden_act"], "gelu_pytorch_tanh");
  EXPECT_EQ(j["layer_norm_epsilon"].get<double>(), 1e-6);  // the decimal the user wrote, not 9.99999997e-07
  EXPECT_TRUE(j["pad_token_id"].is_null());
  EXPECT_NE(dump_json(config_to_hf_json(m2)).find("2.0"), std::string::npos);
  EXPECT_NE(dump_json(j).find("Infinity"), std::string::npos);
  EXPECT_EQ(config_to_hf_json(m2)["architectures"][0], "Mamba2ForCausalLM");
  EXPECT_EQ(config_to_hf_json(m2)["expand"], 2);
}

TEST(HfConfig, RefusesWhatTransformersCannotExpress) {
  auto fails = [](ModelConfig c, const char* fragment) {
    ErrorKind kind = ErrorKind::Internal;
    std::string msg = error_of([&] { config_to_hf_json(c); }, &kind);
    EXPECT_HAS(msg, fragment);
    EXPECT_EQ(static_cast<int>(kind), static_cast<int>(ErrorKind::Unsupported)) << msg;
  };
  ModelConfig c = small_nemotron_h();
  c.rope = true;
  fails(c, "rotary");
  c = small_nemotron_h();
  c.attention_bias = true;
  fails(c, "no bias");
  c = small_nemotron_h();
  c.mlp_activation = Activation::SwiGlu;
  fails(c, "not gated");
  c = small_nemotron_h();
  c.dt_limit_min = 0.0f;  // the ModelConfig default: HF would clamp at time_step_min
  fails(c, "set dt_limit_min = dt_min");
  c = small_nemotron_h();
  c.mamba_norm_group_size = c.d_inner();
  fails(c, "d_inner / n_groups");
  ModelConfig m = config_from_hf_json({{"model_type", "mamba2"}, {"hidden_size", 64}, {"num_heads", 8},
                                       {"head_dim", 16}, {"num_hidden_layers", 1}, {"n_groups", 2}});
  m.mamba_norm_group_size = 64;
  fails(m, "normalises all of");
  m = config_from_hf_json({{"model_type", "mamba2"}, {"hidden_size", 64}, {"num_heads", 8},
                           {"head_dim", 16}, {"num_hidden_layers", 1}, {"n_groups", 1}});
  m.mamba_heads = 6;
  m.mamba_norm_group_size = 96;
  fails(m, "whole multiple");
}

TEST(HfConfig, FilesReadAndWriteWithClearErrors) {
  std::string t = (fs::temp_directory_path() / "hlm-cfg-XXXXXX").string();
  std::string dir = ::mkdtemp(t.data());
  write_hf_config(dir + "/config.json", small_nemotron_h());
  EXPECT_EQ(all_fields(read_hf_config(dir)), all_fields(small_nemotron_h()));
  EXPECT_EQ(all_fields(read_hf_config(dir + "/config.json")), all_fields(small_nemotron_h()));
  write_file_atomic(dir + "/bad.json", "{\"model_type\": \"nemotron_h\", ");
  EXPECT_HAS(error_of([&] { read_hf_config(dir + "/bad.json"); }), "bad.json: invalid JSON");
  write_file_atomic(dir + "/moe.json", R"({"model_type": "nemotron_h", "hybrid_override_pattern": "ME"})");
  EXPECT_HAS(error_of([&] { read_hf_config(dir + "/moe.json"); }), "moe.json: hybrid_override_pattern 'ME'");
  EXPECT_HAS(error_of([&] { read_hf_config(dir + "/nothing"); }), "nothing/config.json: cannot open");
  ModelConfig bad = small_nemotron_h();
  bad.rope = true;
  EXPECT_HAS(error_of([&] { write_hf_config(dir + "/x.json", bad); }), "x.json: nemotron_h");
  EXPECT_FALSE(fs::exists(dir + "/x.json"));
  fs::remove_all(dir);
}

// The config.json files transformers 5.17 wrote for the reference models parse into what
// tools/make_hf_reference.py asked for (meta.json's spec).
TEST(HfConfig, TransformersWrittenConfigsParse) {
  int seen = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(test::source_path("tests/data/hf"), ec)) {
    std::string dir = e.path().string();
    if (!fs::exists(dir + "/meta.json")) continue;
    ++seen;
    SCOPED_TRACE(dir);
    json spec = read_json_file(dir + "/meta.json")["spec"];
    ModelConfig c = read_hf_config(dir);
    EXPECT_EQ(c.model_type, spec["model_type"]);
    EXPECT_EQ(c.vocab_size, spec["vocab"]);
    EXPECT_EQ(c.d_model, spec["d"]);
    EXPECT_EQ(c.tie_embeddings, spec["tied"]);
    EXPECT_EQ(c.mamba_heads, spec["heads"]);
    EXPECT_EQ(c.mamba_head_dim, spec["head_dim"]);
    EXPECT_EQ(c.n_groups, spec["groups"]);
    EXPECT_EQ(c.chunk_size, spec["chunk"]);
    if (c.model_type == "nemotron_h") {
      EXPECT_EQ(c.pattern, spec["pattern"]);
      EXPECT_EQ(c.attn_heads, spec["attn"][0]);
      EXPECT_EQ(c.kv_heads, spec["attn"][1]);
      EXPECT_EQ(c.head_dim(), spec["attn"][2]);
      EXPECT_EQ(c.dt_limit_min, static_cast<float>(spec["dt_min"].get<double>()));
      EXPECT_EQ(c.norm_group_size(), c.d_inner() / c.n_groups);
      EXPECT_EQ(c.mamba_proj_bias, spec["use_bias"]);
      EXPECT_EQ(c.conv_bias, spec["conv_bias"]);
      EXPECT_EQ(c.mlp_bias, spec["mlp_bias"]);
    } else {
      EXPECT_EQ(c.num_layers(), spec["layers"]);
      EXPECT_EQ(c.norm_group_size(), c.d_inner());
      if (spec["limit"].is_null()) EXPECT_TRUE(std::isinf(c.dt_limit_max));
      else EXPECT_EQ(c.dt_limit_max, static_cast<float>(spec["limit"][1].get<double>()));
    }
  }
  EXPECT_GE(seen, 5);
}

// transformers 5.17 loaded the folders our writer made (tests/data/hf/ours_*): every weight arrived
// unchanged, nothing missing or unexpected, and it read our config fields as we meant them.
TEST(HfConfig, TransformersAcceptedOurFolders) {
  for (const char* name : {"ours_nemotron_h", "ours_mamba2"}) {
    SCOPED_TRACE(name);
    std::string dir = test::source_path(std::string("tests/data/hf/") + name);
    json check = read_json_file(dir + "/hf_check.json");
    EXPECT_TRUE(check["ok"].get<bool>());
    EXPECT_TRUE(check["loading_info"]["missing_keys"].empty());
    EXPECT_TRUE(check["loading_info"]["unexpected_keys"].empty());
    EXPECT_TRUE(check["file_tensors_differing"].empty());
    ModelConfig c = read_hf_config(dir);
    const json& seen = check["config_seen"];
    EXPECT_EQ(seen["tie_word_embeddings"].get<bool>(), c.tie_embeddings);
    EXPECT_EQ(seen["n_groups"].get<int64_t>(), c.n_groups);
    EXPECT_EQ(seen["chunk_size"].get<int64_t>(), c.chunk_size);
    if (c.model_type == "nemotron_h") {
      EXPECT_EQ(seen["head_dim"].get<int64_t>(), c.head_dim());
      EXPECT_EQ(static_cast<float>(seen["time_step_min"].get<double>()), c.dt_limit_min);
    } else {
      EXPECT_EQ(static_cast<float>(seen["time_step_limit"][1].get<double>()), c.dt_limit_max);
    }
  }
}

}  // namespace
}  // namespace hlm
