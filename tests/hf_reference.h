// Readers for the transformers reference data in tests/data/hf/<name>/ (made by
// tools/make_hf_reference.py): the model folder (config.json + model.safetensors), reference
// tensors (input ids, logits, loss, every gradient, hidden states), and the greedy continuation.
// Header-only so any test can include it.
#pragma once

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/convert.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/hf_config.h"
#include "test_util.h"

namespace hlm::test {

// One reference model. Layout of tests/data/hf/<name>/:
//   config.json, model.safetensors  the HF model (F32; keys backbone.* or model.*, see meta.json)
//   reference.safetensors           input_ids I64 [T]; logits F32 [T,V] (float32 CPU forward, no
//                                   cache); loss F32 [1] (mean next-token cross-entropy with
//                                   labels = input_ids, i.e. over T-1 positions); grad.<hub name>
//                                   F32 (d loss / d parameter, Hub names with backbone.; a tied
//                                   head's gradient is inside grad.backbone.embeddings.weight);
//                                   hidden.embeddings, hidden.layers.<i> (residual stream after
//                                   layer i), hidden.norm_f, all F32 [T,D]; generate.logits F32
//                                   [12,V] (the logits HF generate() used for each new token,
//                                   through its cached decode path)
//   greedy.json                     prompt (the first 20 input ids), generated (12 tokens of
//                                   generate(do_sample=False), cached decode), full_forward (12
//                                   tokens greedy by full re-forwards without cache)
//   meta.json                       settings, versions, and what transformers did (prefixes, ties)
struct HfReference {
  std::string name, dir;
  ModelConfig cfg;
  int64_t T = 0, V = 0, D = 0;
  std::vector<int64_t> input_ids;
  std::vector<float> logits;  // [T, V]
  float loss = 0;
  std::map<std::string, std::vector<float>> grads;   // by Hub name
  std::map<std::string, std::vector<float>> hidden;  // "embeddings", "layers.0", ..., "norm_f": [T, D]
  std::vector<float> generate_logits;                // [generated.size(), V]
  std::vector<int64_t> prompt, generated, full_forward;
  nlohmann::json meta;
};

inline std::vector<float> read_f32(const SafetensorsFile& f, const SafetensorsInfo& e) {
  HLM_REQUIRE(e.supported && is_float(e.dtype), ErrorKind::Format, "{}: '{}' is not a float tensor", f.path(), e.name);
  std::vector<float> out(static_cast<size_t>(e.numel()));
  convert_elements(out.data(), DType::F32, f.data_of(e), e.dtype, e.numel());
  return out;
}

inline std::vector<int64_t> json_ids(const nlohmann::json& j) {
  std::vector<int64_t> out;
  for (const auto& v : j) out.push_back(v.get<int64_t>());
  return out;
}

inline HfReference load_hf_reference(const std::string& name) {
  HfReference r;
  r.name = name;
  r.dir = source_path("tests/data/hf/" + name);
  r.cfg = read_hf_config(r.dir);
  r.D = r.cfg.d_model;
  SafetensorsFile f(r.dir + "/reference.safetensors");
  for (const auto& e : f.entries()) {
    if (e.name == "input_ids") {
      HLM_REQUIRE(e.dtype == DType::I64 || e.dtype == DType::I32, ErrorKind::Format, "{}: input_ids must be ints",
                  f.path());
      r.T = e.numel();
      const unsigned char* p = static_cast<const unsigned char*>(f.data_of(e));
      for (int64_t i = 0; i < r.T; ++i) {
        if (e.dtype == DType::I64) {
          int64_t v;
          std::memcpy(&v, p + 8 * i, 8);
          r.input_ids.push_back(v);
        } else {
          int32_t v;
          std::memcpy(&v, p + 4 * i, 4);
          r.input_ids.push_back(v);
        }
      }
    } else if (e.name == "logits") {
      HLM_REQUIRE(e.shape.size() == 2, ErrorKind::Format, "{}: logits must be [T, V]", f.path());
      r.V = e.shape[1];
      r.logits = read_f32(f, e);
    } else if (e.name == "loss") {
      r.loss = read_f32(f, e).at(0);
    } else if (e.name == "generate.logits") {
      r.generate_logits = read_f32(f, e);
    } else if (e.name.rfind("grad.", 0) == 0) {
      r.grads[e.name.substr(5)] = read_f32(f, e);
    } else if (e.name.rfind("hidden.", 0) == 0) {
      r.hidden[e.name.substr(7)] = read_f32(f, e);
    }
  }
  nlohmann::json g = read_json_file(r.dir + "/greedy.json");
  r.prompt = json_ids(g.at("prompt"));
  r.generated = json_ids(g.at("generated"));
  if (g.contains("full_forward")) r.full_forward = json_ids(g.at("full_forward"));
  if (std::filesystem::exists(r.dir + "/meta.json")) r.meta = read_json_file(r.dir + "/meta.json");
  return r;
}

// Names of the reference models present (folders holding reference.safetensors), sorted.
inline std::vector<std::string> hf_reference_names() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(source_path("tests/data/hf"), ec))
    if (std::filesystem::exists(e.path() / "reference.safetensors")) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace hlm::test
