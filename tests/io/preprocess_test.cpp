// io/preprocess + `hybridlm preprocess`: text and JSONL documents come back from the reader as
// tokenize(text) + EOD, the dtype follows the vocabulary, the output does not depend on the worker
// count, and bad input or an interrupt names the culprit and leaves no files behind.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "io/indexed_dataset.h"
#include "io/preprocess.h"
#include "io/tokenizer.h"
#include "test_util.h"

extern char** environ;

namespace hlm {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "hlm_pre_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name, const std::string& content) const {
    std::string p = (path / name).string();
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  std::string str(const std::string& name) const { return (path / name).string(); }
  // Everything in the directory except the inputs named.
  std::vector<std::string> outputs() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) {
      std::string n = e.path().filename().string();
      if (n.find(".bin") != std::string::npos || n.find(".idx") != std::string::npos)
        out.push_back(n);
    }
    return out;
  }
};

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const Tokenizer& neox() {
  static const Tokenizer tok = [] {
    std::string p = test::source_path("data/20B_tokenizer.json");
    if (!fs::exists(p)) throw std::runtime_error(p + " missing: run scripts/fetch_data.sh");
    return Tokenizer::load(p);
  }();
  return tok;
}

std::vector<int32_t> with_eod(std::vector<int32_t> v) {
  v.push_back(0);
  return v;
}

TEST(Preprocess, TextFilesAreDocumentsEndingInEod) {
  TempDir dir;
  std::vector<std::string> texts = {"Fellow-Citizens of the Senate", "Line one.\nLine two.\n",
                                    "café — ok"};
  PreprocessOptions opt;
  for (size_t i = 0; i < texts.size(); ++i)
    opt.inputs.push_back(dir.file("doc" + std::to_string(i) + ".txt", texts[i]));
  opt.inputs.push_back(dir.file("empty.txt", ""));
  opt.output_prefix = dir.str("out");
  PreprocessStats s = preprocess(neox(), opt);
  EXPECT_EQ(s.documents, 3);
  EXPECT_EQ(s.empty_skipped, 1);
  EXPECT_EQ(s.dtype, TokenDType::U16);
  EXPECT_EQ(s.eod, 0);
  IndexedDataset ds(opt.output_prefix);
  ASSERT_EQ(ds.num_documents(), 3);
  EXPECT_EQ(ds.dtype(), TokenDType::U16);
  int64_t total = 0;
  for (int64_t d = 0; d < 3; ++d) {
    EXPECT_EQ(ds.document(d), with_eod(neox().encode(texts[static_cast<size_t>(d)])));
    total += ds.document_length(d);
  }
  EXPECT_EQ(total, s.tokens);
  EXPECT_EQ(dir.outputs().size(), 2u);  // out.bin, out.idx; no temp files
}

TEST(Preprocess, JsonlLinesAreDocuments) {
  TempDir dir;
  PreprocessOptions opt;
  opt.inputs = {
      dir.file("a.jsonl",
               "{\"text\": \"Hello World!\", \"year\": 1790}\n\n{\"text\": \"second\\nline\"}\r\n"),
      dir.file("b.jsonl", "{\"body\": \"x\", \"text\": \"third\"}")};
  opt.output_prefix = dir.str("j");
  opt.append_eod = false;
  PreprocessStats s = preprocess(neox(), opt);
  EXPECT_EQ(s.eod, -1);
  IndexedDataset ds(opt.output_prefix);
  ASSERT_EQ(ds.num_documents(), 3);
  EXPECT_EQ(ds.document(0), (std::vector<int32_t>{12092, 3645, 2}));
  EXPECT_EQ(ds.document(1), neox().encode("second\nline"));
  EXPECT_EQ(ds.document(2), neox().encode("third"));
  opt.jsonl_key = "body";
  opt.inputs = {opt.inputs[1]};
  preprocess(neox(), opt);
  EXPECT_EQ(IndexedDataset(opt.output_prefix).document(0), neox().encode("x"));
}

TEST(Preprocess, OutputDoesNotDependOnWorkers) {
  TempDir dir;
  PreprocessOptions opt;
  for (const char* name : {"1790_george_washington_n.txt", "1801_thomas_jefferson_dr.txt",
                           "1862_abraham_lincoln_r.txt"}) {
    opt.inputs.push_back(test::source_path(std::string("data/sotu/") + name));
  }
  opt.workers = 1;
  opt.output_prefix = dir.str("w1");
  preprocess(neox(), opt);
  opt.workers = 3;
  opt.output_prefix = dir.str("w3");
  preprocess(neox(), opt);
  EXPECT_EQ(slurp(dir.str("w1.bin")), slurp(dir.str("w3.bin")));
  EXPECT_EQ(slurp(dir.str("w1.idx")), slurp(dir.str("w3.idx")));
  EXPECT_EQ(IndexedDataset(dir.str("w1")).num_documents(), 3);
}

TEST(Preprocess, LargeVocabularyWritesInt32AndMissingEodIsAnError) {
  // A tiny byte-level tokenizer with an added token at id 70000: ids no longer fit uint16.
  std::string json =
      R"({"added_tokens": [{"id": 70000, "content": "<big>", "special": true, "normalized": false}],
    "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}})";
  Tokenizer tok = Tokenizer::from_json_text(json, "big.json");
  TempDir dir;
  PreprocessOptions opt;
  opt.inputs = {dir.file("t.txt", "ab<big>a")};
  opt.output_prefix = dir.str("big");
  try {
    preprocess(tok, opt);
    ADD_FAILURE() << "no error without <|endoftext|>";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("big.json: no <|endoftext|>"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(dir.outputs().empty());
  opt.append_eod = false;
  PreprocessStats s = preprocess(tok, opt);
  EXPECT_EQ(s.dtype, TokenDType::I32);
  IndexedDataset ds(opt.output_prefix);
  EXPECT_EQ(ds.dtype(), TokenDType::I32);
  EXPECT_EQ(ds.document(0), (std::vector<int32_t>{0, 1, 70000, 0}));
}

TEST(Preprocess, BadInputNamesFileAndLineAndLeavesNothing) {
  TempDir dir;
  auto error_for = [&](std::vector<std::string> inputs, const std::string& key = "text") {
    PreprocessOptions opt;
    opt.inputs = std::move(inputs);
    opt.output_prefix = dir.str("out");
    opt.jsonl_key = key;
    std::string msg = "(no error)";
    try {
      preprocess(neox(), opt);
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_TRUE(dir.outputs().empty()) << msg;
    return msg;
  };
  std::string good = dir.file("good.txt", "fine");
  std::string bad_json = dir.file("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  EXPECT_NE(error_for({good, bad_json}).find("bad.jsonl:2: invalid JSON"), std::string::npos);
  std::string no_key = dir.file("nokey.jsonl", "{\"text\": \"ok\"}\n\n{\"txt\": \"x\"}\n");
  EXPECT_NE(error_for({no_key}).find("nokey.jsonl:3: no key 'text'"), std::string::npos);
  std::string not_str = dir.file("num.jsonl", "{\"text\": 42}\n");
  EXPECT_NE(error_for({not_str}).find("num.jsonl:1: 'text' is a number, not a string"),
            std::string::npos);
  std::string bad_utf8 = dir.file("latin1.txt", "line one\nna\xefve\n");
  EXPECT_NE(error_for({good, bad_utf8}).find("latin1.txt:2: invalid UTF-8 (byte offset 11)"),
            std::string::npos);
  EXPECT_NE(error_for({good, dir.str("nope.txt")}).find("nope.txt: no such file"),
            std::string::npos);
  EXPECT_NE(error_for({dir.str("*.none")}).find("pattern matches no file"), std::string::npos);
}

TEST(Preprocess, DirectoriesAndGlobsExpandSorted) {
  TempDir dir;
  fs::create_directories(dir.path / "in" / "sub");
  fs::create_directories(dir.path / "in" / ".hidden");
  std::string b = dir.file("in/b.txt", "b"), a = dir.file("in/sub/a.txt", "a");
  dir.file("in/.complete", "");
  dir.file("in/.hidden/x.txt", "x");
  EXPECT_EQ(expand_inputs({dir.str("in")}), (std::vector<std::string>{b, a}));
  EXPECT_EQ(expand_inputs({dir.str("in/*.txt")}), (std::vector<std::string>{b}));
}

// Runs the CLI; returns its exit status (as from waitpid) and its stderr.
int run_binary(const std::vector<std::string>& args, std::string* err, pid_t* pid_out = nullptr,
               const std::function<void(pid_t)>& while_running = {}) {
  std::string err_path =
      (fs::temp_directory_path() / ("hlm_pre_err_" + std::to_string(::getpid()))).string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> argv;
  std::string bin = hlm::test::binary_path();
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  if (pid_out) *pid_out = pid;
  if (while_running) while_running(pid);
  int status = 0;
  waitpid(pid, &status, 0);
  *err = slurp(err_path);
  fs::remove(err_path);
  return status;
}

TEST(PreprocessCli, WritesDatasetAndSummary) {
  TempDir dir;
  std::string in = dir.file("in.jsonl",
                            "{\"text\": \"Hello World!\"}\n{\"text\": \"The quick brown fox jumps "
                            "over the lazy dog.\"}\n");
  std::string err;
  int status =
      run_binary({"preprocess", "--tokenizer", test::source_path("data/20B_tokenizer.json"),
                  "--input", in, "--output-prefix", dir.str("cli"), "--workers", "2"},
                 &err);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << err;
  EXPECT_NE(err.find("preprocess: 2 documents (0 empty skipped), 15 tokens"), std::string::npos)
      << err;
  IndexedDataset ds(dir.str("cli"));
  EXPECT_EQ(ds.document(0), (std::vector<int32_t>{12092, 3645, 2, 0}));

  status = run_binary(
      {"preprocess", "--tokenizer", test::source_path("data/20B_tokenizer.json"), "--input",
       dir.file("bad.jsonl", "{\"text\": \"a\"}\nnot json\n"), "--output-prefix", dir.str("bad")},
      &err);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  EXPECT_NE(err.find("hybridlm: error: "), std::string::npos) << err;
  EXPECT_NE(err.find("bad.jsonl:2: invalid JSON"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir.str("bad.bin")) || fs::exists(dir.str("bad.bin.tmp")));
}

TEST(PreprocessCli, InterruptLeavesNoFiles) {
  // The input is a FIFO we feed by hand: the run is surely mid-way (temp files open) when SIGINT
  // comes.
  TempDir dir;
  std::string fifo = dir.str("in.jsonl");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string prefix = dir.str("int"), err;
  int status =
      run_binary({"preprocess", "--tokenizer", test::source_path("data/20B_tokenizer.json"),
                  "--input", fifo, "--output-prefix", prefix},
                 &err, nullptr, [&](pid_t pid) {
                   std::ofstream feed(fifo);  // blocks until the child opens the FIFO for reading
                   feed << "{\"text\": \"one document\"}\n" << std::flush;
                   for (int i = 0; i < 500 && !fs::exists(prefix + ".bin.tmp"); ++i) {
                     std::this_thread::sleep_for(std::chrono::milliseconds(10));
                   }
                   EXPECT_TRUE(fs::exists(prefix + ".bin.tmp"));
                   ::kill(pid, SIGINT);
                   std::this_thread::sleep_for(std::chrono::milliseconds(100));
                 });
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGINT) << status << " " << err;
  EXPECT_NE(err.find("interrupted"), std::string::npos) << err;
  EXPECT_TRUE(dir.outputs().empty());
}

}  // namespace
}  // namespace hlm
