// model/checkpoint: save -> load gives bit-identical weights (F32, F64, BF16 rounding), both key
// prefixes and shards load, tied heads follow transformers, every mismatch (missing, extra,
// mis-shaped, bad dtype, truncated or bad file) fails with one error listing all of it, saving is
// atomic, and the HF reference folders under tests/data/hf load into their parameter tables.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "hf_reference.h"
#include "io/file.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/params.h"
#include "test_util.h"

namespace hlm {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "hlm-ckpt-XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack) << "\nmissing: " << (needle)

// The two small models whose folders went through transformers 5.17 (tests/data/hf/ours_*).
ModelConfig probe_nemotron_h() {
  ModelConfig c;
  c.model_type = "nemotron_h";
  c.pattern = "M-*M";
  c.vocab_size = 256;
  c.d_model = 32;
  c.tie_embeddings = true;
  c.residual_in_fp32 = false;
  c.mamba_heads = 4;
  c.mamba_head_dim = 8;
  c.ssm_state = 8;
  c.n_groups = 2;
  c.chunk_size = 16;
  c.dt_min = 0.002f;
  c.dt_limit_min = 0.002f;
  c.attn_heads = 4;
  c.kv_heads = 2;
  c.attn_head_dim = 8;
  c.mlp_hidden = 64;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.validate();
  return c;
}

ModelConfig probe_mamba2() {
  ModelConfig c;
  c.model_type = "mamba2";
  c.pattern = "MM";
  c.vocab_size = 256;
  c.d_model = 32;
  c.tie_embeddings = true;
  c.mamba_heads = 4;
  c.mamba_head_dim = 16;
  c.ssm_state = 8;
  c.n_groups = 1;
  c.chunk_size = 16;
  c.mamba_norm_group_size = 64;
  c.dt_limit_max = 0.5f;
  c.initializer_range = 0.1f;
  c.rescale_prenorm_residual = false;
  c.pad_token_id = 1;
  c.bos_token_id = 0;
  c.eos_token_id = 2;
  c.validate();
  return c;
}

// Deterministic weights at the scales the reference models use (logits of order one).
template <typename T>
void fill_weights(const std::vector<ParamSpec>& table, T* arena, uint64_t seed) {
  Rng rng(seed, 7);
  for (const auto& p : table) {
    T* w = arena + p.offset;
    for (int64_t i = 0; i < p.numel(); ++i) {
      double v = 0;
      switch (p.role) {
        case ParamRole::Embedding:
        case ParamRole::Linear:
        case ParamRole::OutProj: v = 0.1 * rng.normal(); break;
        case ParamRole::Norm: v = 1.0 + 0.2 * rng.normal(); break;
        case ParamRole::Bias: v = 0.05 * rng.normal(); break;
        case ParamRole::ConvWeight: v = rng.uniform() - 0.5; break;
        case ParamRole::ConvBias: v = 0.6 * rng.uniform() - 0.3; break;
        case ParamRole::ALog: v = std::log(1.0 + 15.0 * rng.uniform()); break;
        case ParamRole::D: v = 0.5 + rng.uniform(); break;
        case ParamRole::DtBias: {
          double dt = std::exp(std::log(0.002) + rng.uniform() * (std::log(0.3) - std::log(0.002)));
          v = dt + std::log(-std::expm1(-dt));  // inverse softplus
          break;
        }
      }
      w[i] = static_cast<T>(v);
    }
  }
}

struct Weights {
  ModelConfig cfg;
  std::vector<ParamSpec> table;
  std::vector<double> storage;  // 8-byte units: F32 or F64 arena
  Tensor arena;
  Weights(const ModelConfig& c, DType dtype, uint64_t seed = 0) : cfg(c), table(param_table(c)) {
    int64_t n = param_arena_numel(table);
    storage.assign(static_cast<size_t>(n), 0.0);
    arena = Tensor(storage.data(), dtype, Device::CPU, {n});
    if (seed) {
      if (dtype == DType::F32) fill_weights(table, arena.ptr<float>(), seed);
      else fill_weights(table, arena.ptr<double>(), seed);
    }
  }
  bool same_bits(const Weights& o) const {
    return arena.dtype == o.arena.dtype && arena.numel() == o.arena.numel() &&
           std::memcmp(arena.data, o.arena.data, arena.nbytes()) == 0;
  }
};

// Rewrites model.safetensors of `dir` with `edit` applied to its (name, tensor) list.
void rewrite(const std::string& dir, const std::function<void(std::vector<SafetensorsItem>&)>& edit,
             std::vector<std::vector<float>>* keep) {
  std::vector<SafetensorsItem> items;
  {
    SafetensorsFile f(dir + "/model.safetensors");
    for (const auto& e : f.entries()) {
      keep->emplace_back(static_cast<size_t>(e.numel()));
      std::memcpy(keep->back().data(), f.data_of(e), e.end - e.begin);
      items.emplace_back(e.name, Tensor(keep->back().data(), e.dtype, Device::CPU,
                                        Shape(e.shape.data(), e.shape.size())));
    }
  }
  edit(items);
  write_safetensors(dir + "/model.safetensors", items, {{"format", "pt"}});
}

TEST(Checkpoint, HubNamesFromEitherPrefix) {
  EXPECT_EQ(hub_param_name("model.layers.3.mixer.D", "nemotron_h"), "backbone.layers.3.mixer.D");
  EXPECT_EQ(hub_param_name("backbone.layers.3.mixer.D", "mamba2"), "backbone.layers.3.mixer.D");
  EXPECT_EQ(hub_param_name("backbone.embedding.weight", "mamba2"), "backbone.embeddings.weight");
  EXPECT_EQ(hub_param_name("model.embedding.weight", "nemotron_h"), "backbone.embeddings.weight");
  EXPECT_EQ(hub_param_name("lm_head.weight", "nemotron_h"), "lm_head.weight");
  EXPECT_EQ(hub_param_name("mtp.layers.0.norm.weight", "nemotron_h"), "");
  EXPECT_EQ(hub_param_name("mtp.layers.0.norm.weight", "mamba2"), "mtp.layers.0.norm.weight");
  EXPECT_EQ(hub_param_name("weird.x", "mamba2"), "weird.x");
}

TEST(Checkpoint, SaveThenLoadIsBitIdentical) {
  TempDir dir;
  for (const ModelConfig& cfg : {probe_nemotron_h(), probe_mamba2()}) {
    for (DType dt : {DType::F32, DType::F64}) {
      SCOPED_TRACE(cfg.model_type + " " + dtype_name(dt));
      Weights w(cfg, dt, 11);
      std::string ck = dir / (cfg.model_type + dtype_name(dt));
      save_checkpoint(ck, cfg, w.table, w.arena, dt);
      ModelConfig back = load_checkpoint_config(ck);
      EXPECT_EQ(back.summary(), cfg.summary());
      Weights r(back, dt);
      CheckpointLoadInfo info = load_checkpoint_weights(ck, back, r.table, r.arena);
      EXPECT_EQ(info.tensors, static_cast<int64_t>(w.table.size()));
      EXPECT_TRUE(w.same_bits(r));
      // F64 weights through an F32 file, then back: F32 rounding exactly.
      if (dt == DType::F64) {
        save_checkpoint(ck, cfg, w.table, w.arena, DType::F32);
        Weights r32(cfg, DType::F64);
        load_checkpoint_weights(ck, cfg, r32.table, r32.arena);
        for (int64_t i = 0; i < w.arena.numel(); ++i)
          ASSERT_EQ(r32.arena.ptr<double>()[i], static_cast<double>(static_cast<float>(w.arena.ptr<double>()[i])));
      }
    }
  }
}

TEST(Checkpoint, Bf16AndF16FilesConvertOnLoad) {
  TempDir dir;
  ModelConfig cfg = probe_mamba2();
  Weights w(cfg, DType::F32, 5);
  save_checkpoint(dir / "bf", cfg, w.table, w.arena, DType::BF16);
  EXPECT_EQ(read_json_file(dir / "bf/config.json")["dtype"], "bfloat16");
  SafetensorsFile f(dir / "bf/model.safetensors");
  EXPECT_EQ(f.find("backbone.layers.1.mixer.in_proj.weight")->dtype_name, "BF16");
  Weights r(cfg, DType::F32);
  load_checkpoint_weights(dir / "bf", cfg, r.table, r.arena);
  Weights r64(cfg, DType::F64);
  load_checkpoint_weights(dir / "bf", cfg, r64.table, r64.arena);
  for (const auto& p : w.table)
    for (int64_t i = 0; i < p.numel(); ++i) {
      float want = bf16_bits_to_f32(f32_to_bf16_bits(w.arena.ptr<float>()[p.offset + i]));
      ASSERT_EQ(r.arena.ptr<float>()[p.offset + i], want) << p.name;
      ASSERT_EQ(r64.arena.ptr<double>()[p.offset + i], static_cast<double>(want)) << p.name;
    }
  // An F16 file (as some exports are) converts the same way.
  save_checkpoint(dir / "h", cfg, w.table, w.arena, DType::F16);
  Weights rh(cfg, DType::F32);
  load_checkpoint_weights(dir / "h", cfg, rh.table, rh.arena);
  for (int64_t i = 0; i < 100; ++i)
    EXPECT_EQ(rh.arena.ptr<float>()[i], f16_bits_to_f32(f32_to_f16_bits(w.arena.ptr<float>()[i])));
}

TEST(Checkpoint, SavesHubNamesAndTheTiedNemotronHead) {
  TempDir dir;
  ModelConfig nh = probe_nemotron_h();
  Weights w(nh, DType::F32, 3);
  save_checkpoint(dir / "nh", nh, w.table, w.arena);
  SafetensorsFile f(dir / "nh/model.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  for (const auto& p : w.table) EXPECT_TRUE(f.contains(p.name)) << p.name;
  // transformers 5.17 never ties NemotronH: the head is stored, equal to the embeddings.
  ASSERT_TRUE(f.contains("lm_head.weight"));
  EXPECT_EQ(std::memcmp(f.tensor("lm_head.weight").data, f.tensor("backbone.embeddings.weight").data,
                        f.tensor("lm_head.weight").nbytes()),
            0);
  Weights r(nh, DType::F32);
  CheckpointLoadInfo info = load_checkpoint_weights(dir / "nh", nh, r.table, r.arena);
  EXPECT_TRUE(w.same_bits(r));
  ASSERT_EQ(info.notes.size(), 1u);
  EXPECT_HAS(info.notes[0], "equals the embeddings");
  // Mamba2 ties in transformers: no head in the file.
  ModelConfig m2 = probe_mamba2();
  Weights w2(m2, DType::F32, 3);
  save_checkpoint(dir / "m2", m2, w2.table, w2.arena);
  EXPECT_FALSE(SafetensorsFile(dir / "m2/model.safetensors").contains("lm_head.weight"));
}

TEST(Checkpoint, ReadsModelPrefixShardsAndLegacyEmbeddingName) {
  TempDir dir;
  ModelConfig cfg = probe_nemotron_h();
  cfg.tie_embeddings = false;
  Weights w(cfg, DType::F32, 9);
  save_checkpoint(dir / "a", cfg, w.table, w.arena);
  std::vector<std::vector<float>> keep;
  // transformers 5 saves NemotronH as model.*; old Mamba exports name the embeddings embedding.
  rewrite(dir / "a", [](std::vector<SafetensorsItem>& items) {
    for (auto& it : items) {
      if (it.name == "backbone.embeddings.weight") it.name = "backbone.embedding.weight";
      else if (it.name.rfind("backbone.", 0) == 0) it.name = "model." + it.name.substr(9);
    }
    items.emplace_back("mtp.layers.0.norm.weight", items[0].tensor);  // ignored, as transformers does
  }, &keep);
  Weights r(cfg, DType::F32);
  CheckpointLoadInfo info = load_checkpoint_weights(dir / "a", cfg, r.table, r.arena);
  EXPECT_TRUE(w.same_bits(r));
  ASSERT_EQ(info.notes.size(), 1u);
  EXPECT_HAS(info.notes[0], "mtp.layers.0.norm.weight");

  // The same tensors split over two shards with an index.
  {
    SafetensorsFile f(dir / "a/model.safetensors");
    std::vector<SafetensorsItem> s1, s2;
    nlohmann::json wm = nlohmann::json::object();
    for (size_t i = 0; i < f.entries().size(); ++i) {
      const auto& e = f.entries()[i];
      auto& dst = i % 2 ? s2 : s1;
      dst.emplace_back(e.name, f.tensor(e.name));
      wm[e.name] = i % 2 ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    }
    fs::create_directory(dir / "sharded");
    write_safetensors(dir / "sharded/model-00001-of-00002.safetensors", s1);
    write_safetensors(dir / "sharded/model-00002-of-00002.safetensors", s2);
    write_file_atomic(dir / "sharded/model.safetensors.index.json", nlohmann::json{{"weight_map", wm}}.dump(1));
  }
  Weights rs(cfg, DType::F32);
  info = load_checkpoint_weights(dir / "sharded", cfg, rs.table, rs.arena);
  EXPECT_TRUE(w.same_bits(rs));
  EXPECT_HAS(info.source, "model.safetensors.index.json");
}

TEST(Checkpoint, EveryMismatchIsListedInOneError) {
  TempDir dir;
  ModelConfig cfg = probe_nemotron_h();
  Weights w(cfg, DType::F32, 2);
  save_checkpoint(dir / "c", cfg, w.table, w.arena);
  std::vector<std::vector<float>> keep;
  std::vector<int32_t> ints(8, 1);
  rewrite(dir / "c", [&](std::vector<SafetensorsItem>& items) {
    std::vector<SafetensorsItem> out;
    for (auto& it : items) {
      if (it.name == "backbone.layers.0.mixer.D" || it.name == "backbone.norm_f.weight") continue;  // missing
      if (it.name == "backbone.layers.0.mixer.A_log")
        it.tensor = it.tensor.reshape({2, 2});  // wrong shape
      if (it.name == "backbone.layers.2.mixer.q_proj.weight") it.tensor = it.tensor.reshape({8, -1});
      if (it.name == "backbone.layers.3.mixer.dt_bias") {
        it.tensor = Tensor(ints.data(), DType::I32, Device::CPU, {4});  // not floats
        it.dtype = DType::I32;
      }
      out.push_back(it);
    }
    out.emplace_back("backbone.layers.9.mixer.extra", items[0].tensor);  // unexpected
    out.emplace_back("model.layers.1.norm.weight", items[1].tensor);     // also given as backbone.
    items = out;
  }, &keep);
  Weights r(cfg, DType::F32);
  std::string msg = error_of([&] { load_checkpoint_weights(dir / "c", cfg, r.table, r.arena); });
  EXPECT_HAS(msg, dir / "c/model.safetensors");
  EXPECT_HAS(msg, "2 missing: backbone.layers.0.mixer.D, backbone.norm_f.weight");
  EXPECT_HAS(msg, "1 unexpected: backbone.layers.9.mixer.extra");
  EXPECT_HAS(msg, "2 with the wrong shape");
  EXPECT_HAS(msg, "backbone.layers.0.mixer.A_log is [2,2] in the file, the model needs [4]");
  EXPECT_HAS(msg, "backbone.layers.2.mixer.q_proj.weight is [8,128]");
  EXPECT_HAS(msg, "1 not stored as floats: backbone.layers.3.mixer.dt_bias (I32)");
  EXPECT_HAS(msg, "stored twice: backbone.layers.1.norm.weight");

  // A config that disagrees with the file (another width) lists every tensor's shape.
  ModelConfig wide = cfg;
  wide.d_model = 48;
  Weights rw(wide, DType::F32);
  msg = error_of([&] { load_checkpoint_weights(dir / "c", wide, rw.table, rw.arena); });
  EXPECT_HAS(msg, "with the wrong shape");
  EXPECT_HAS(msg, "and ");  // long lists are cut
}

TEST(Checkpoint, TiedHeadFollowsTransformers) {
  TempDir dir;
  std::vector<std::vector<float>> keep;
  std::vector<float> other(256 * 32, 0.5f);
  // A tied config with a different head in the file: transformers would untie and use that head
  // (seen with 5.17 for Mamba2; NemotronH never ties), which a tied model cannot compute.
  ModelConfig m2 = probe_mamba2();
  Weights w(m2, DType::F32, 4);
  save_checkpoint(dir / "m", m2, w.table, w.arena);
  rewrite(dir / "m", [&](std::vector<SafetensorsItem>& items) {
    items.emplace_back("lm_head.weight", Tensor(other.data(), DType::F32, Device::CPU, {256, 32}));
  }, &keep);
  Weights r(m2, DType::F32);
  EXPECT_HAS(error_of([&] { load_checkpoint_weights(dir / "m", m2, r.table, r.arena); }),
             "set tie_word_embeddings to false");
  ModelConfig nh = probe_nemotron_h();
  Weights wn(nh, DType::F32, 4);
  save_checkpoint(dir / "n", nh, wn.table, wn.arena);
  rewrite(dir / "n", [&](std::vector<SafetensorsItem>& items) {
    for (auto& it : items)
      if (it.name == "lm_head.weight") it.tensor = Tensor(other.data(), DType::F32, Device::CPU, {256, 32});
  }, &keep);
  Weights rn(nh, DType::F32);
  EXPECT_HAS(error_of([&] { load_checkpoint_weights(dir / "n", nh, rn.table, rn.arena); }),
             "set tie_word_embeddings to false");
  // A head equal to the embeddings is fine for either model type.
  rewrite(dir / "m", [&](std::vector<SafetensorsItem>& items) {
    Tensor emb;
    for (auto& it : items)
      if (it.name == "backbone.embeddings.weight") emb = it.tensor;
    for (auto& it : items)
      if (it.name == "lm_head.weight") it.tensor = emb;
  }, &keep);
  CheckpointLoadInfo info = load_checkpoint_weights(dir / "m", m2, r.table, r.arena);
  EXPECT_TRUE(w.same_bits(r));
  ASSERT_EQ(info.notes.size(), 1u);
  EXPECT_HAS(info.notes[0], "equals the embeddings");
  // Untied config, head missing: listed as missing.
  save_checkpoint(dir / "m0", m2, w.table, w.arena);
  ModelConfig un = probe_mamba2();
  un.tie_embeddings = false;
  Weights ru(un, DType::F32);
  EXPECT_HAS(error_of([&] { load_checkpoint_weights(dir / "m0", un, ru.table, ru.arena); }),
             "missing: lm_head.weight");
}

TEST(Checkpoint, BadFilesAndArenasFailClearly) {
  TempDir dir;
  ModelConfig cfg = probe_mamba2();
  Weights w(cfg, DType::F32, 1);
  save_checkpoint(dir / "t", cfg, w.table, w.arena);
  Weights r(cfg, DType::F32);
  // Truncated weights file.
  fs::resize_file(dir / "t/model.safetensors", fs::file_size(dir / "t/model.safetensors") - 100);
  std::string msg = error_of([&] { load_checkpoint_weights(dir / "t", cfg, r.table, r.arena); });
  EXPECT_HAS(msg, "t/model.safetensors");
  EXPECT_HAS(msg, "truncated");
  // Garbage header.
  write_file_atomic(dir / "t/model.safetensors", std::string("\x0b\0\0\0\0\0\0\0{\"a\": [1, 2", 19));
  EXPECT_HAS(error_of([&] { load_checkpoint_weights(dir / "t", cfg, r.table, r.arena); }), "not valid JSON");
  // No weights at all.
  fs::remove(dir / "t/model.safetensors");
  EXPECT_HAS(error_of([&] { load_checkpoint_weights(dir / "t", cfg, r.table, r.arena); }), "no model.safetensors");
  EXPECT_HAS(error_of([&] { load_checkpoint_config(dir / "missing"); }), "missing/config.json");
  // An arena too small, or of an integer type.
  std::vector<float> small(10);
  EXPECT_HAS(error_of([&] {
    load_checkpoint_weights(dir / "t", cfg, r.table, Tensor(small.data(), DType::F32, Device::CPU, {10}));
  }), "the table needs");
  EXPECT_HAS(error_of([&] {
    load_checkpoint_weights(dir / "t", cfg, r.table, Tensor(small.data(), DType::I32, Device::CPU, {10}));
  }), "F32 or F64");
}

TEST(Checkpoint, SavingIsAtomicAndRefusesForeignFolders) {
  TempDir dir;
  ModelConfig cfg = probe_mamba2();
  Weights a(cfg, DType::F32, 1), b(cfg, DType::F32, 2);
  save_checkpoint(dir / "ck", cfg, a.table, a.arena);
  save_checkpoint(dir / "ck/", cfg, b.table, b.arena);  // replaces the old one in one rename
  Weights r(cfg, DType::F32);
  load_checkpoint_weights(dir / "ck", cfg, r.table, r.arena);
  EXPECT_TRUE(b.same_bits(r));
  // Only the checkpoint folder is left: no temp or old folders.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"ck"});
  // A failing save (a config HF cannot express) leaves the old checkpoint as it was.
  ModelConfig bad = cfg;
  bad.mamba_norm_group_size = 32;
  bad.n_groups = 2;
  EXPECT_HAS(error_of([&] { save_checkpoint(dir / "ck", bad, b.table, a.arena); }), "gated norm");
  load_checkpoint_weights(dir / "ck", cfg, r.table, r.arena);
  EXPECT_TRUE(b.same_bits(r));
  names.clear();
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"ck"});
  // A folder with other files in it is not replaced.
  fs::create_directory(dir / "mine");
  std::ofstream(dir / "mine/notes.txt") << "keep me";
  EXPECT_HAS(error_of([&] { save_checkpoint(dir / "mine", cfg, a.table, a.arena); }), "notes.txt");
  EXPECT_TRUE(fs::exists(dir / "mine/notes.txt"));
}

// The probe folders in tests/data/hf/ours_* are what this writer produces for the probe configs
// and weights (transformers loaded them; their HF logits sit beside them). HLM_WRITE_HF_PROBES=dir
// writes them afresh into dir.
TEST(Checkpoint, ProbeFoldersAreWhatTheWriterMakes) {
  struct Probe {
    const char* name;
    ModelConfig cfg;
    DType dtype;
  };
  std::vector<Probe> probes = {{"ours_nemotron_h", probe_nemotron_h(), DType::F32},
                               {"ours_mamba2", probe_mamba2(), DType::BF16}};
  TempDir dir;
  const char* out_env = std::getenv("HLM_WRITE_HF_PROBES");
  std::string out = out_env ? out_env : dir.path();
  for (const auto& p : probes) {
    Weights w(p.cfg, DType::F32, 2024);
    save_checkpoint(out + "/" + p.name, p.cfg, w.table, w.arena, p.dtype);
    std::string stored = test::source_path(std::string("tests/data/hf/") + p.name);
    if (!fs::exists(stored + "/model.safetensors")) continue;
    EXPECT_EQ(read_file(out + "/" + p.name + "/model.safetensors"), read_file(stored + "/model.safetensors"))
        << p.name;
    EXPECT_EQ(read_file(out + "/" + p.name + "/config.json"), read_file(stored + "/config.json")) << p.name;
  }
}

// Every reference model made by tools/make_hf_reference.py: its config parses and its weights
// (as transformers saved them) load into the parameter table with nothing missing or unexpected.
TEST(Checkpoint, HfReferenceFoldersLoad) {
  std::vector<std::string> names = test::hf_reference_names();
  if (names.empty()) GTEST_SKIP() << "no reference data under tests/data/hf";
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    std::string dir = test::source_path("tests/data/hf/" + name);
    ModelConfig cfg = load_checkpoint_config(dir);
    Weights r(cfg, DType::F32);
    CheckpointLoadInfo info = load_checkpoint_weights(dir, cfg, r.table, r.arena);
    EXPECT_EQ(info.tensors, static_cast<int64_t>(r.table.size()));
    test::HfReference ref = test::load_hf_reference(name);
    EXPECT_EQ(ref.cfg.summary(), cfg.summary());
    EXPECT_GT(ref.T, 0);
    EXPECT_EQ(ref.V, cfg.vocab_size);
    // A gradient for every parameter, of its shape.
    for (const auto& p : r.table) {
      auto it = ref.grads.find(p.name);
      ASSERT_NE(it, ref.grads.end()) << p.name;
      EXPECT_EQ(static_cast<int64_t>(it->second.size()), p.numel()) << p.name;
    }
    EXPECT_EQ(ref.grads.size(), r.table.size());
    EXPECT_TRUE(std::isfinite(ref.loss));
    EXPECT_EQ(ref.generated.size(), 12u);
  }
}

}  // namespace
}  // namespace hlm
