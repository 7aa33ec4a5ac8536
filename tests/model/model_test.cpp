// model/: every parameter's gradient of a whole tiny hybrid matches finite differences in float64,
// packed rows equal their documents run alone, the decode path reproduces the full forward's logits
// at every position, and bad patterns / configs fail with clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "model/config.h"
#include "model/model.h"
#include "ops/loss.h"
#include "test_util.h"

namespace hlm {
namespace {

ModelConfig tiny_config(const std::string& pattern, bool variant) {
  ModelConfig c;
  c.pattern = pattern;
  c.vocab_size = 37;
  c.d_model = 16;
  c.mamba_heads = 4;
  c.mamba_head_dim = 4;
  c.ssm_state = 8;
  c.n_groups = 2;
  c.conv_kernel = 4;
  c.chunk_size = 4;
  c.attn_heads = 4;
  c.kv_heads = 2;
  c.attn_head_dim = 4;
  c.mlp_hidden = 24;
  c.mlp_activation = Activation::ReluSquared;
  c.dt_limit_in_decode = true;  // our decode must reproduce our prefill exactly
  if (variant) {  // the other corners: RoPE, SwiGLU, biases, tied head, dt clamp, full-width norm
    c.rope = true;
    c.rope_theta = 100.0f;
    c.mlp_activation = Activation::SwiGlu;
    c.mlp_bias = true;
    c.attention_bias = true;
    c.mamba_proj_bias = true;
    c.tie_embeddings = true;
    c.dt_limit_min = 0.02f;
    c.mamba_norm_group_size = 16;
    c.attn_heads = 2;
    c.kv_heads = 2;
    c.attn_head_dim = 6;
  }
  c.validate();
  return c;
}

// Random weights away from the special values of the init (norms at 1, biases at 0, D at 1).
void randomize(Model& m, uint64_t seed) {
  m.init_weights(seed);
  Rng rng(seed, 99);
  Tensor p = m.params();
  double* w = p.ptr<double>();
  for (size_t i = 0; i < m.table().size(); ++i) {
    const ParamSpec& s = m.table()[i];
    double amp = (s.role == ParamRole::Embedding || s.role == ParamRole::Linear || s.role == ParamRole::OutProj)
                     ? 0.3
                     : 0.2;
    for (int64_t j = 0; j < s.numel(); ++j) w[s.offset + j] += amp * rng.normal();
  }
}

struct Batch {
  int64_t B, T;
  std::vector<int32_t> ids, targets, doc, pos;
  ModelInput input() {
    ModelInput in;
    in.ids = Tensor(ids.data(), DType::I32, Device::CPU, {B, T});
    if (!targets.empty()) in.targets = Tensor(targets.data(), DType::I32, Device::CPU, {B, T});
    if (!doc.empty()) in.doc = Tensor(doc.data(), DType::I32, Device::CPU, {B, T});
    pos = positions_from_docs(doc.empty() ? nullptr : doc.data(), B, T);
    in.pos = Tensor(pos.data(), DType::I32, Device::CPU, {B, T});
    return in;
  }
};

Batch random_batch(int64_t B, int64_t T, int64_t V, uint64_t seed, bool packed) {
  Batch b{B, T, {}, {}, {}, {}};
  Rng rng(seed, 5);
  for (int64_t i = 0; i < B * T; ++i) b.ids.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(V))));
  for (int64_t i = 0; i < B * T; ++i) {
    int64_t t = i % T;
    b.targets.push_back(t + 1 < T ? b.ids[static_cast<size_t>(i + 1)] : kIgnoreIndex);
  }
  b.targets[2] = kIgnoreIndex;
  if (packed) {
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < T; ++t) b.doc.push_back(r == 1 ? (t < 5 ? 0 : (t < 6 ? 1 : 2)) : 0);
  }
  return b;
}

class WholeModelGradient : public ::testing::TestWithParam<bool> {};

TEST_P(WholeModelGradient, EveryParameterMatchesFiniteDifferences) {
  const bool variant = GetParam();
  ModelConfig cfg = tiny_config("M*-M-", variant);
  Model m(cfg, Device::CPU, DType::F64);
  randomize(m, 3);
  Batch batch = random_batch(2, 11, cfg.vocab_size, 4, /*packed=*/true);
  ModelInput in = batch.input();

  m.zero_grads();
  m.forward(in);
  m.backward(1.0f);
  std::vector<double> grads = to_host<double>(m.grads());

  double* w = m.params().ptr<double>();
  // Central differences along a random unit direction per tensor, Richardson-extrapolated
  // (error O(h⁴)), against the analytic directional derivative.
  const double h = 1e-4;
  for (size_t i = 0; i < m.table().size(); ++i) {
    const ParamSpec& s = m.table()[i];
    Rng rng(17, i);
    std::vector<double> dir(static_cast<size_t>(s.numel()));
    double norm = 0;
    for (double& d : dir) {
      d = rng.normal();
      norm += d * d;
    }
    double analytic = 0;
    for (int64_t j = 0; j < s.numel(); ++j) {
      dir[static_cast<size_t>(j)] /= std::sqrt(norm);
      analytic += dir[static_cast<size_t>(j)] * grads[static_cast<size_t>(s.offset + j)];
    }
    auto loss_at = [&](double h) {
      for (int64_t j = 0; j < s.numel(); ++j) w[s.offset + j] += h * dir[static_cast<size_t>(j)];
      double l = m.forward(in);
      for (int64_t j = 0; j < s.numel(); ++j) w[s.offset + j] -= h * dir[static_cast<size_t>(j)];
      return l;
    };
    auto central = [&](double step) { return (loss_at(step) - loss_at(-step)) / (2 * step); };
    double numeric = (4 * central(h / 2) - central(h)) / 3;
    double err = std::fabs(numeric - analytic) / std::max(std::fabs(numeric), 1e-4);
    EXPECT_LT(err, 1e-6) << s.name << ": analytic " << analytic << " numeric " << numeric;
    EXPECT_NE(analytic, 0.0) << s.name << " got no gradient";
  }
}

INSTANTIATE_TEST_SUITE_P(Model, WholeModelGradient, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "RopeSwigluBiasTied" : "NemotronH"; });

// Logits of row r, positions [t0, t0+n) of the last forward.
std::vector<double> logits_rows(const Model& m, int64_t r, int64_t t0, int64_t n) {
  Tensor lg = m.logits();
  int64_t T = lg.size(1), V = lg.size(2);
  std::vector<double> out;
  for (int64_t t = t0; t < t0 + n; ++t)
    for (int64_t v = 0; v < V; ++v)
      out.push_back(lg.dtype == DType::F64 ? lg.ptr<double>()[(r * T + t) * V + v]
                                           : lg.ptr<float>()[(r * T + t) * V + v]);
  return out;
}

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    worst = std::max(worst, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return worst / scale;
}

TEST(Model, PackedRowEqualsDocumentsRunAlone) {
  for (bool variant : {false, true}) {
    ModelConfig cfg = tiny_config("M*-MM*-", variant);
    Model m(cfg, Device::CPU, DType::F64);
    randomize(m, 8);
    Batch packed = random_batch(1, 13, cfg.vocab_size, 9, false);
    packed.targets.clear();
    for (int64_t t = 0; t < 13; ++t) packed.doc.push_back(t < 6 ? 3 : 7);
    ModelInput in = packed.input();
    m.forward(in);
    std::vector<double> a_packed = logits_rows(m, 0, 0, 6), b_packed = logits_rows(m, 0, 6, 7);

    Batch a{1, 6, std::vector<int32_t>(packed.ids.begin(), packed.ids.begin() + 6), {}, {}, {}};
    m.forward(a.input());
    EXPECT_LT(max_rel(a_packed, logits_rows(m, 0, 0, 6)), 1e-12) << "variant " << variant;
    Batch b{1, 7, std::vector<int32_t>(packed.ids.begin() + 6, packed.ids.end()), {}, {}, {}};
    m.forward(b.input());
    EXPECT_LT(max_rel(b_packed, logits_rows(m, 0, 0, 7)), 1e-12) << "variant " << variant;
  }
}

TEST(Model, DecodeReproducesFullForwardAtEveryPosition) {
  for (bool variant : {false, true}) {
    ModelConfig cfg = tiny_config("M*M-*M*-", variant);
    Model m(cfg, Device::CPU, DType::F32);
    m.init_weights(21);
    // Weights larger than the init so the logits are O(1) and errors show.
    float* w = m.params().ptr<float>();
    for (int64_t i = 0; i < m.params().numel(); ++i) w[i] *= 3.0f;
    const int64_t B = 2, T = 19, P = 6;
    Batch full = random_batch(B, T, cfg.vocab_size, 22, false);
    full.targets.clear();
    // Row 1 is left-padded by 3 tokens: the padding is an earlier document.
    full.doc.assign(static_cast<size_t>(B * T), 1);
    for (int t = 0; t < 3; ++t) full.doc[static_cast<size_t>(T + t)] = 0;
    m.forward(full.input());
    std::vector<double> want0 = logits_rows(m, 0, P - 1, T - P + 1);
    std::vector<double> want1 = logits_rows(m, 1, P - 1, T - P + 1);

    Batch prompt{B, P, {}, {}, {}, {}};
    for (int64_t r = 0; r < B; ++r)
      for (int64_t t = 0; t < P; ++t) {
        prompt.ids.push_back(full.ids[static_cast<size_t>(r * T + t)]);
        prompt.doc.push_back(full.doc[static_cast<size_t>(r * T + t)]);
      }
    InferenceState st = m.new_state(B, T);
    st.use_graph = variant;  // the recorded-step path (on the CPU: the recorded function re-runs)
    std::vector<double> got0, got1;
    auto take = [&](const Tensor& lg) {
      int64_t V = cfg.vocab_size;
      for (int64_t v = 0; v < V; ++v) got0.push_back(lg.ptr<float>()[v]);
      const float* row1 = lg.ptr<float>() + lg.step(0);
      for (int64_t v = 0; v < V; ++v) got1.push_back(row1[v]);
    };
    take(m.prefill(prompt.input(), st));
    for (int64_t t = P; t < T; ++t) {
      std::vector<int32_t> ids = {full.ids[static_cast<size_t>(t)], full.ids[static_cast<size_t>(T + t)]};
      take(m.decode(Tensor(ids.data(), DType::I32, Device::CPU, {B}), st));
    }
    EXPECT_LT(max_rel(got0, want0), 1e-4) << "variant " << variant;
    EXPECT_LT(max_rel(got1, want1), 1e-4) << "variant " << variant;
    // Left padding is invisible: row 1 equals its real tokens run alone.
    Batch alone{1, T - 3, std::vector<int32_t>(full.ids.begin() + T + 3, full.ids.end()), {}, {}, {}};
    m.forward(alone.input());
    std::vector<double> got_alone = logits_rows(m, 0, P - 4, T - P + 1);
    EXPECT_LT(max_rel(got1, got_alone), 1e-4) << "variant " << variant;
  }
}

TEST(Model, RecomputeModeGivesTheSameLossAndGradientsInLessMemory) {
  for (bool variant : {false, true}) {
    ModelConfig cfg = tiny_config("M*-M-", variant);
    Model m(cfg, Device::CPU, DType::F64);
    randomize(m, 31);
    Batch batch = random_batch(2, 11, cfg.vocab_size, 32, /*packed=*/true);
    ModelInput in = batch.input();
    m.zero_grads();
    double l0 = m.forward(in);
    m.backward(0.5f);
    std::vector<double> g0 = to_host<double>(m.grads());
    size_t full_bytes = m.activation_bytes(2, 11);

    m.set_recompute(true, /*head_chunk_rows=*/5);  // several head chunks, one partial
    m.zero_grads();
    double l1 = m.forward(in);
    m.backward(0.5f);
    std::vector<double> g1 = to_host<double>(m.grads());
    EXPECT_NEAR(l1, l0, 1e-12 * std::fabs(l0));
    double worst = 0, scale = 0;
    for (size_t i = 0; i < g0.size(); ++i) {
      worst = std::max(worst, std::fabs(g1[i] - g0[i]));
      scale = std::max(scale, std::fabs(g0[i]));
    }
    EXPECT_LT(worst, 1e-12 * scale) << "variant " << variant;
    EXPECT_LT(m.activation_bytes(2, 11), full_bytes);
    EXPECT_LT(m.activation_bytes(4, 4096), 0.6 * static_cast<double>(Model(cfg, Device::CPU, DType::F64).activation_bytes(4, 4096)));
  }
}

TEST(Model, ActivationBytesCoverTheArena) {
  Model m(tiny_config("M*-", false), Device::CPU, DType::F32);
  m.init_weights(1);
  size_t small = m.activation_bytes(1, 8), big = m.activation_bytes(2, 64);
  EXPECT_GT(small, 0u);
  EXPECT_GT(big, 10 * small);
}

void expect_error(const std::function<void()>& f, ErrorKind kind, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Config, BadPatternsAndConfigsFailClearly) {
  expect_error([] { parse_pattern("M*E-"); }, ErrorKind::Unsupported, "MoE layers are not supported yet");
  expect_error([] { parse_pattern("M*X"); }, ErrorKind::InvalidArgument, "unknown symbol 'X' at position 2");
  expect_error([] { parse_pattern("||"); }, ErrorKind::InvalidArgument, "has no layers");
  EXPECT_EQ(parse_pattern("M-|M*").size(), 4u);

  auto bad = [](auto mutate) {
    ModelConfig c = tiny_config("M*-", false);
    mutate(c);
    c.validate();
  };
  expect_error([&] { bad([](ModelConfig& c) { c.n_groups = 3; }); }, ErrorKind::InvalidArgument,
               "groups (3) must divide the Mamba heads (4)");
  expect_error([&] { bad([](ModelConfig& c) { c.kv_heads = 3; }); }, ErrorKind::InvalidArgument,
               "KV heads (3) must divide attention heads (4)");
  expect_error([&] { bad([](ModelConfig& c) { c.vocab_size = 0; }); }, ErrorKind::InvalidArgument, "vocab_size");
  expect_error([&] { bad([](ModelConfig& c) { c.mlp_hidden = 0; }); }, ErrorKind::InvalidArgument, "MLP width");
  expect_error([&] { bad([](ModelConfig& c) { c.ssm_state = -1; }); }, ErrorKind::InvalidArgument, "state size");
  expect_error([&] { bad([](ModelConfig& c) { c.mamba_norm_group_size = 5; }); }, ErrorKind::InvalidArgument,
               "group size 5 must divide d_inner 16");
  expect_error([&] { bad([](ModelConfig& c) { c.model_type = "llama"; }); }, ErrorKind::InvalidArgument,
               "model_type 'llama'");
  expect_error([&] { bad([](ModelConfig& c) { c.pattern = "M*|-"; }); }, ErrorKind::InvalidArgument,
               "must be normalised");
}

}  // namespace
}  // namespace hlm
