// `hybridlm train`: 2N steps straight equal N steps + stop + --resume + N steps bitwise (losses,
// weights, optimizer state); checkpoints are complete folders that generate/logits load; bad flags
// and inputs end in one clear error with no partial output.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "io/file.h"
#include "io/indexed_dataset.h"
#include "test_util.h"

namespace hlm {
namespace {

namespace fs = std::filesystem;

using test::CmdResult;
CmdResult run(const std::string& args, bool stdout_only = false) { return test::run_binary(args, stdout_only); }

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("hlm_train_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // 40 documents of 5..60 tokens over a vocabulary of 97, with some repeated structure.
    IndexedDatasetWriter w((dir_ / "data").string(), TokenDType::U16);
    Rng rng(5);
    for (int d = 0; d < 40; ++d) {
      std::vector<int32_t> doc;
      int64_t len = 5 + static_cast<int64_t>(rng.below(56));
      for (int64_t t = 0; t < len; ++t)
        doc.push_back(static_cast<int32_t>(t % 3 == 0 ? 1 + rng.below(96) : (doc.empty() ? 1 : (doc.back() * 7) % 96 + 1)));
      doc.push_back(0);
      w.add_document(doc);
    }
    w.finish();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string train_args(const std::string& out) const {
    return "train --data " + (dir_ / "data").string() + " --val-data " + (dir_ / "data").string() + " --out " + out +
           " --vocab 97 --pattern \"M*-M\" --d-model 16 --mamba-heads 2 --mamba-head-dim 8 --d-state 8 --chunk 8"
           " --attn-heads 2 --kv-heads 1 --head-dim 8 --mlp 32 --batch 2 --seq-len 24 --steps 8 --warmup 2"
           " --lr 1e-2 --eval-every 4 --eval-rows 4 --save-every 4 --keep 3 --quiet --threads 2";
  }
  // metrics.jsonl without the timing fields.
  static std::vector<nlohmann::json> metrics(const fs::path& out) {
    std::ifstream f(out / "metrics.jsonl");
    std::vector<nlohmann::json> rows;
    std::string line;
    while (std::getline(f, line)) {
      nlohmann::json j = nlohmann::json::parse(line);
      j.erase("tokens_per_s");
      j.erase("elapsed_s");
      rows.push_back(j);
    }
    return rows;
  }
  fs::path dir_;
};

TEST_F(TrainCli, ResumeIsBitwiseIdenticalToAnUninterruptedRun) {
  fs::path a = dir_ / "straight", b = dir_ / "resumed";
  CmdResult r = run(train_args(a.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  r = run(train_args(b.string()) + " --stop-at 4");
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::exists(b / "checkpoints" / "step-00000004"));
  ASSERT_FALSE(fs::exists(b / "checkpoints" / "step-00000008"));
  r = run(train_args(b.string()) + " --resume");
  ASSERT_EQ(r.code, 0) << r.out;

  std::vector<nlohmann::json> ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(ma[i], mb[i]) << "metrics row " << i;
  int losses = 0;
  for (const auto& j : ma) losses += j.contains("loss");
  EXPECT_EQ(losses, 8);
  // The curve starts with the untrained model's validation loss (step 0), near ln(97), as is the
  // first training loss.
  ASSERT_TRUE(ma.front().contains("val_loss")) << ma.front();
  EXPECT_EQ(ma.front()["step"].get<int>(), 0);
  EXPECT_NEAR(ma.front()["val_loss"].get<double>(), std::log(97.0), 0.3);
  EXPECT_NEAR(ma[1]["loss"].get<double>(), std::log(97.0), 0.3);
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "config.json"}) {
    EXPECT_EQ(read_file((a / "checkpoints/step-00000008" / f).string()),
              read_file((b / "checkpoints/step-00000008" / f).string()))
        << f << " differs";
  }
  nlohmann::json sa = nlohmann::json::parse(read_file((a / "checkpoints/step-00000008/trainer_state.json").string()));
  nlohmann::json sb = nlohmann::json::parse(read_file((b / "checkpoints/step-00000008/trainer_state.json").string()));
  EXPECT_EQ(sa, sb);
  // Only complete checkpoint folders exist; none of the temporary ones.
  for (const auto& e : fs::directory_iterator(b / "checkpoints"))
    EXPECT_EQ(e.path().filename().string().rfind("step-", 0), 0u) << e.path();

  // The checkpoint folder is a model folder for generate and logits.
  r = run("generate --model " + a.string() + " --tokens \"1 2 3\" --max-new-tokens 5 --temperature 0 --json --no-stop");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"tokens\":["), std::string::npos) << r.out;
}

TEST_F(TrainCli, InterruptSavesACompleteCheckpointAndResumes) {
  fs::path out = dir_ / "interrupted";
  // SIGINT after a moment: the step in flight finishes, a checkpoint is written atomically, exit 130.
  std::string args = train_args(out.string()) + " --steps 100000 --save-every 0";
  CmdResult r = test::run_shell("timeout --preserve-status --signal=INT 1.5 " + test::binary_path() + " " + args);
  ASSERT_EQ(r.code, 130) << r.out;
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) entries.push_back(e.path().filename().string());
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].rfind("step-", 0), 0u) << entries[0];
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(out / "checkpoints" / entries[0] / f)) << f;
  for (const auto& row : metrics(out)) EXPECT_TRUE(row.contains("step"));
  r = run(args + " --resume --stop-at " + std::to_string(std::stoll(entries[0].substr(5)) + 1));
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(TrainCli, BadFlagsAndInputsFailClearly) {
  std::string out = (dir_ / "bad").string();
  CmdResult r = run("train --data " + (dir_ / "nope").string() + " --out " + out + " --vocab 97 --quiet");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
  r = run(train_args(out) + " --steps 0");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--steps"), std::string::npos) << r.out;
  r = run(train_args(out) + " --pattern \"M*E\"");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("MoE layers are not supported yet"), std::string::npos) << r.out;
  r = run(train_args(out) + " --kv-heads 3");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("KV heads (3) must divide attention heads (2)"), std::string::npos) << r.out;
  r = run("train --data " + (dir_ / "data").string() + " --out " + out + " --quiet");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("vocabulary size is unknown"), std::string::npos) << r.out;
  r = run(train_args(out) + " --resume");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("no checkpoint"), std::string::npos) << r.out;
  // A dataset with a token outside the vocabulary is caught, not a crash.
  r = run(train_args(out) + " --vocab 50");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("but the model's vocabulary has 50 ids"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out + "/checkpoints/step-00000008"));
}

}  // namespace
}  // namespace hlm
