// Real checkpoints: for every transformers reference model, `hybridlm logits` matches HF's logits
// within 1e-4 absolute, `hybridlm generate --temperature 0 --json` gives HF's greedy tokens, and
// every gradient from `hybridlm grads` is within 1e-4 of the tensor's largest entry.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "hf_reference.h"
#include "io/safetensors.h"

namespace hlm {
namespace {

namespace fs = std::filesystem;

using test::CmdResult;
CmdResult run(const std::string& args, bool stdout_only = false) { return test::run_binary(args, stdout_only); }

std::string ids_arg(const std::vector<int64_t>& ids) {
  std::string s = "\"";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s.push_back(' ');
    s.append(std::to_string(ids[i]));
  }
  s.push_back('"');
  return s;
}

class HfReferenceCli : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() / ("hlm_hfref_" + GetParam() + "_" + std::to_string(getpid()));
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }
  fs::path tmp_;
};

TEST_P(HfReferenceCli, LogitsMatchTransformers) {
  test::HfReference ref = test::load_hf_reference(GetParam());
  std::string out = (tmp_ / "logits.safetensors").string();
  CmdResult r = run("logits --model " + ref.dir + " --tokens " + ids_arg(ref.input_ids) + " --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  SafetensorsFile f(out);
  std::vector<float> got = test::read_f32(f, *f.find("logits"));
  ASSERT_EQ(got.size(), ref.logits.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i]));
    worst = std::max(worst, std::fabs(double(got[i]) - ref.logits[i]));
    scale = std::max(scale, std::fabs(double(ref.logits[i])));
  }
  EXPECT_LE(worst, 1e-4) << GetParam() << ": max |logit error| " << worst << " (logits up to " << scale << ")";
  std::printf("[ measured ] %s: max |logit - transformers| = %.3g (largest logit %.3g)\n", GetParam().c_str(),
              worst, scale);
}

TEST_P(HfReferenceCli, GreedyTokensMatchTransformers) {
  test::HfReference ref = test::load_hf_reference(GetParam());
  CmdResult r = run("generate --model " + ref.dir + " --tokens " + ids_arg(ref.prompt) +
              " --temperature 0 --max-new-tokens " + std::to_string(ref.generated.size()) + " --no-stop --json", true);
  ASSERT_EQ(r.code, 0) << r.out;
  std::string line = r.out.substr(0, r.out.find('\n'));
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(test::json_ids(j["tokens"]), ref.generated) << r.out;
}

TEST_P(HfReferenceCli, GradientsMatchTorchAutograd) {
  test::HfReference ref = test::load_hf_reference(GetParam());
  std::string out = (tmp_ / "grads.safetensors").string();
  CmdResult r = run("grads --model " + ref.dir + " --tokens " + ids_arg(ref.input_ids) + " --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  SafetensorsFile f(out);
  std::vector<float> loss = test::read_f32(f, *f.find("loss"));
  EXPECT_NEAR(loss[0], ref.loss, 1e-5 * std::max(1.0f, std::fabs(ref.loss)));
  ASSERT_FALSE(ref.grads.empty());
  double worst_rel = 0;
  for (const auto& [name, want] : ref.grads) {
    const SafetensorsInfo* e = f.find(name);
    ASSERT_NE(e, nullptr) << "no gradient for " << name;
    std::vector<float> got = test::read_f32(f, *e);
    ASSERT_EQ(got.size(), want.size()) << name;
    double worst = 0, scale = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_FALSE(std::isnan(got[i])) << name;
      worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(double(want[i])));
    }
    EXPECT_LE(worst, 1e-4 * scale) << GetParam() << " " << name << ": max error " << worst << ", largest entry "
                                   << scale;
    worst_rel = std::max(worst_rel, worst / std::max(scale, 1e-30));
  }
  std::printf("[ measured ] %s: loss %.7f vs %.7f; worst gradient error / largest entry = %.3g over %zu tensors\n",
              GetParam().c_str(), loss[0], ref.loss, worst_rel, ref.grads.size());
}

INSTANTIATE_TEST_SUITE_P(Cli, HfReferenceCli,
                         ::testing::Values("nemotron_h_gqa", "nemotron_h_mha_tied", "nemotron_h_model_prefix",
                                           "mamba2_tied", "mamba2_groups_untied"));

TEST(Cli, BadModelAndTokensFailClearly) {
  CmdResult r = run("logits --model /nonexistent/model --tokens \"1 2\" --out /tmp/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("/nonexistent/model: no such model folder"), std::string::npos) << r.out;
  std::string dir = test::source_path("tests/data/hf/nemotron_h_gqa");
  r = run("logits --model " + dir + " --tokens \"1 x 2\" --out /tmp/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("not a list of non-negative token ids"), std::string::npos) << r.out;
  r = run("logits --model " + dir + " --tokens \"1 999999\" --out /tmp/x.safetensors");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("outside the vocabulary"), std::string::npos) << r.out;
  r = run("generate --model " + dir + " --tokens \"1 2\" --top-p 0");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("top-p"), std::string::npos) << r.out;
  r = run("generate --model " + dir + " --tokens \"1 2\" --max-new-tokens 100 --max-context 10");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("exceeds --max-context 10"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hlm
