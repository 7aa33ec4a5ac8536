// io/tokenizer: the NeoX-20B tokenizer.json gives HF tokenizers' ids and decodings on 271 reference
// cases, bad tokenizer files and bad ids fail with clear errors, and the `tokenize` CLI pipes
// stdin.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/tokenizer.h"
#include "core/rng.h"
#include "test_util.h"

namespace hlm {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string neox_path() { return test::source_path("data/20B_tokenizer.json"); }

// One tokenizer for the whole file: loading parses 2.5 MB of JSON.
const Tokenizer& neox() {
  static const Tokenizer* tok = [] {
    if (!std::filesystem::exists(neox_path())) {
      ADD_FAILURE() << neox_path() << " is missing: run scripts/fetch_data.sh first";
      return static_cast<Tokenizer*>(nullptr);
    }
    return new Tokenizer(Tokenizer::load(neox_path()));
  }();
  if (!tok) throw std::runtime_error("tokenizer missing: run scripts/fetch_data.sh");
  return *tok;
}

std::string expect_error(const std::function<void()>& f, ErrorKind kind) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

TEST(Tokenizer, KnownEncodings) {
  const Tokenizer& tok = neox();
  EXPECT_EQ(tok.encode("Hello World!"), (std::vector<int32_t>{12092, 3645, 2}));
  EXPECT_EQ(tok.encode("The quick brown fox jumps over the lazy dog."),
            (std::vector<int32_t>{510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15}));
  EXPECT_EQ(tok.vocab_size(), 50277);
  EXPECT_EQ(tok.eod_id(), 0);
  EXPECT_EQ(tok.token_to_id("<|padding|>"), 1);
  EXPECT_EQ(tok.id_to_token(12092), "Hello");
}

TEST(Tokenizer, MatchesHfTokenizersOnReferenceCases) {
  const Tokenizer& tok = neox();
  auto cases =
      nlohmann::json::parse(read_file(test::source_path("tests/data/tokenizer/neox_cases.json")));
  ASSERT_EQ(cases["cases"].size(), 271u);
  int round_trips = 0;
  for (const auto& c : cases["cases"]) {
    std::string text = c["text"].get<std::string>();
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), want) << "text: " << nlohmann::json(text).dump();
    std::string decoded = tok.decode(want);
    EXPECT_EQ(decoded, c["decoded"].get<std::string>())
        << "ids of: " << nlohmann::json(text).dump();
    if (decoded == text) ++round_trips;
  }
  EXPECT_GE(round_trips, 264);  // all but the 7 texts that NFC changes
}

TEST(Tokenizer, SplitsAddedTokensBeforeBpe) {
  const Tokenizer& tok = neox();
  // "<|endoftext|>" is matched on the raw text; runs of spaces are added tokens on the normalised
  // text.
  EXPECT_EQ(tok.encode("a<|endoftext|>b"), (std::vector<int32_t>{66, 0, 67}));
  std::vector<int32_t> spaces = tok.encode(std::string(30, ' ') + "x");
  EXPECT_EQ(spaces, (std::vector<int32_t>{50254, 50272, 89}));  // 24 + 6 spaces, then "x"
  EXPECT_EQ(tok.decode(spaces), std::string(30, ' ') + "x");
}

TEST(Tokenizer, LongInputsDoNotOverflowTheRegexEngine) {
  const Tokenizer& tok = neox();
  std::string ws(1 << 18, '\n');
  ws += "x";
  std::vector<int32_t> ids = tok.encode(ws);
  EXPECT_EQ(tok.decode(ids), ws);
  std::string letters(1 << 16, 'a');  // one pre-token of 64 Ki bytes: the BPE queue, not the cache
  EXPECT_EQ(tok.decode(tok.encode(letters)), letters);
}

TEST(Tokenizer, RejectsInvalidUtf8AndBadIds) {
  const Tokenizer& tok = neox();
  std::string msg = expect_error([&] { tok.encode("ok \xff\xfe"); }, ErrorKind::InvalidArgument);
  EXPECT_NE(msg.find("byte 3"), std::string::npos) << msg;
  msg = expect_error(
      [&] {
        tok.decode(std::vector<int32_t>{1, 50277});
      },
      ErrorKind::InvalidArgument);
  EXPECT_NE(msg.find("50277"), std::string::npos) << msg;
  expect_error([&] { tok.decode(std::vector<int32_t>{-1}); }, ErrorKind::InvalidArgument);
}

TEST(Tokenizer, DecodeReplacesBrokenUtf8LikeHf) {
  const Tokenizer& tok = neox();
  // "é" is C3 A9; the byte-level token for the lone lead byte C3 is "Ã".
  std::optional<int32_t> lead = tok.token_to_id("\xC3\x83");
  ASSERT_TRUE(lead.has_value());
  EXPECT_EQ(tok.decode(std::vector<int32_t>{*lead}), "\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("a\xE2\x82z"), "a\xEF\xBF\xBDz");  // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // valid 4-byte sequence kept
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: 3
  EXPECT_EQ(tok.decode(tok.encode("é")), "é");
}

TEST(Tokenizer, SpeechesRoundTrip) {
  const Tokenizer& tok = neox();
  for (const char* name : {"1790_george_washington_n.txt", "1863_abraham_lincoln_r.txt",
                           "2021_joseph_r_biden_d.txt"}) {
    std::string text = read_file(test::source_path(std::string("data/sotu/") + name));
    ASSERT_FALSE(text.empty()) << name << ": run scripts/fetch_data.sh";
    std::vector<int32_t> ids = tok.encode(text);
    EXPECT_GT(ids.size(), text.size() / 8) << name;
    EXPECT_EQ(tok.decode(ids), text) << name;
  }
}

TEST(Tokenizer, BadFilesFailWithTheFileNamed) {
  std::string msg = expect_error([] { Tokenizer::load("/nonexistent/tok.json"); }, ErrorKind::Io);
  EXPECT_NE(msg.find("/nonexistent/tok.json"), std::string::npos) << msg;

  std::string full = read_file(neox_path());
  ASSERT_FALSE(full.empty()) << "run scripts/fetch_data.sh";
  msg =
      expect_error([&] { Tokenizer::from_json_text(full.substr(0, full.size() / 2), "half.json"); },
                   ErrorKind::Format);
  EXPECT_NE(msg.find("half.json"), std::string::npos) << msg;

  auto minimal = [](const std::string& model, const std::string& extra = "") {
    return R"({"added_tokens": [], "normalizer": null,
               "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
               "decoder": {"type": "ByteLevel"}, "model": )" +
           model + extra + "}";
  };
  std::string ok_model =
      R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  Tokenizer small = Tokenizer::from_json_text(minimal(ok_model), "small.json");
  EXPECT_EQ(small.encode("abba"), (std::vector<int32_t>{2, 1, 0}));
  std::string pair_form =
      R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]})";
  EXPECT_EQ(Tokenizer::from_json_text(minimal(pair_form), "pairs.json").encode("ab"),
            (std::vector<int32_t>{2}));

  msg = expect_error(
      [&] {
        Tokenizer::from_json_text(
            minimal(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"), "m.json");
      },
      ErrorKind::Format);
  EXPECT_NE(msg.find("m.json: model.merges[0]: token 'ab' is not in the vocabulary"),
            std::string::npos)
      << msg;
  msg = expect_error(
      [&] {
        Tokenizer::from_json_text(minimal(R"({"type": "BPE", "vocab": {"a": 0}})"), "m.json");
      },
      ErrorKind::Format);
  EXPECT_NE(msg.find("missing field 'merges'"), std::string::npos) << msg;
  msg = expect_error(
      [&] {
        Tokenizer::from_json_text(minimal(R"({"type": "BPE", "vocab": {"a": "x"}, "merges": []})"),
                                  "m.json");
      },
      ErrorKind::Format);
  expect_error(
      [&] {
        Tokenizer::from_json_text(minimal(R"({"type": "WordPiece", "vocab": {}})"), "m.json");
      },
      ErrorKind::Unsupported);
  expect_error([&] { Tokenizer::from_json_text("[1, 2]", "m.json"); }, ErrorKind::Format);
}

TEST(Tokenizer, AddedTokenOptionsFollowHf) {
  // lstrip/rstrip swallow whitespace around the token; single_word only matches whole words.
  std::string json = R"({"added_tokens": [
      {"id": 10, "content": "<m>", "special": true, "normalized": false, "lstrip": true, "rstrip": true, "single_word": false},
      {"id": 11, "content": "ab", "special": false, "normalized": true, "lstrip": false, "rstrip": false, "single_word": true}],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "Ġ": 2, "c": 3}, "merges": []}})";
  Tokenizer tok = Tokenizer::from_json_text(json, "opts.json");
  EXPECT_EQ(tok.encode("a  <m>  b"), (std::vector<int32_t>{0, 10, 1}));
  EXPECT_EQ(tok.encode("ab cab ab"), (std::vector<int32_t>{11, 2, 3, 0, 1, 2, 11}));
  EXPECT_EQ(tok.vocab_size(), 12);
  expect_error([&] { tok.decode(std::vector<int32_t>{5}); }, ErrorKind::InvalidArgument);  // a hole
}

TEST(Tokenizer, SplitSequenceAndPrefixSpaceFollowHf) {
  // Llama-3-style pre-tokenizer: a Split regex (digits in threes), then ByteLevel without its
  // regex.
  std::string json = R"({"added_tokens": [], "normalizer": null,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "12": 5, "123": 6, "45": 7, "x": 8, "Ġ": 9, "Ġx": 10},
              "merges": ["1 2", "12 3", "4 5", "Ġ x"], "ignore_merges": false}})";
  Tokenizer tok = Tokenizer::from_json_text(json, "split.json");
  EXPECT_EQ(tok.encode("12345"), (std::vector<int32_t>{6, 7}));         // "123" "45"
  EXPECT_EQ(tok.encode("x 1234"), (std::vector<int32_t>{8, 9, 6, 3}));  // "x " stays one word: x, Ġ
  // ByteLevel with add_prefix_space puts a space before each stretch that lacks one.
  std::string prefixed = R"({"added_tokens": [], "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"x": 0, "Ġ": 1, "Ġx": 2}, "merges": ["Ġ x"]}})";
  Tokenizer ptok = Tokenizer::from_json_text(prefixed, "prefix.json");
  EXPECT_EQ(ptok.encode("x x"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(ptok.encode(" x"), (std::vector<int32_t>{2}));
}

TEST(Tokenizer, TruncatedJsonNeverCrashes) {
  std::string json =
      R"({"added_tokens": [{"id": 3, "content": "<e>", "special": true}], "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}, "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})";
  EXPECT_NO_THROW(Tokenizer::from_json_text(json, "t.json"));
  for (size_t n = 0; n < json.size(); n += 3) {
    EXPECT_THROW(Tokenizer::from_json_text(json.substr(0, n), "t.json"), Error) << n;
  }
}

TEST(Tokenizer, RandomTextRoundTripsAndThreadsAgree) {
  const Tokenizer& tok = neox();
  Rng rng(2024);
  const std::vector<std::pair<int32_t, int32_t>> ranges = {
      {0x20, 0x7E},   {0x20, 0x20},     {0x0A, 0x0A},       {0x09, 0x09},
      {0x410, 0x44F}, {0x4E00, 0x4FFF}, {0x1F600, 0x1F64F}, {0x3041, 0x3096}};
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) {
    std::string s;
    int64_t n = 1 + static_cast<int64_t>(rng.below(60));
    for (int64_t k = 0; k < n; ++k) {
      auto [lo, hi] = ranges[rng.below(ranges.size())];
      int32_t cp = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(hi - lo + 1)));
      char buf[4];
      int len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      if (len == 1) buf[0] = static_cast<char>(cp);
      if (len == 2) {
        buf[0] = static_cast<char>(0xC0 | (cp >> 6));
        buf[1] = static_cast<char>(0x80 | (cp & 0x3F));
      }
      if (len == 3) {
        buf[0] = static_cast<char>(0xE0 | (cp >> 12));
        buf[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = static_cast<char>(0x80 | (cp & 0x3F));
      }
      if (len == 4) {
        buf[0] = static_cast<char>(0xF0 | (cp >> 18));
        buf[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        buf[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        buf[3] = static_cast<char>(0x80 | (cp & 0x3F));
      }
      s.append(buf, static_cast<size_t>(len));
    }
    texts.push_back(s);
  }
  std::vector<std::vector<int32_t>> serial(texts.size()), parallel(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    serial[i] = tok.encode(texts[i]);
    EXPECT_EQ(tok.decode(serial[i]), texts[i]);
  }
#pragma omp parallel for num_threads(4) schedule(dynamic, 1)
  for (size_t i = 0; i < texts.size(); ++i) parallel[i] = tok.encode(texts[i]);
  EXPECT_EQ(serial, parallel);
}

std::string run_cli(const std::string& args, const std::string& stdin_text, int* status) {
  auto tmp = std::filesystem::temp_directory_path() / ("hlm_tok_cli_" + std::to_string(::getpid()));
  { std::ofstream(tmp, std::ios::binary) << stdin_text; }
  std::string cmd = hlm::test::binary_path() + " " + args + " < " + tmp.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  std::filesystem::remove(tmp);
  return out;
}

TEST(TokenizeCli, EncodesStdinAsIsAndDecodes) {
  int status = 0;
  std::string args = "tokenize --tokenizer " + neox_path();
  EXPECT_EQ(run_cli(args, "Hello World!", &status), "12092 3645 2\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run_cli(args + " --json", "Hello World!\n", &status), "[12092,3645,2,187]\n");
  EXPECT_EQ(run_cli(args + " --decode", "12092 3645 2 187", &status), "Hello World!\n");
  EXPECT_EQ(status, 0);
  std::string out = run_cli(args + " --decode", "[12092, 99999999]", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("cannot decode id 99999999"), std::string::npos) << out;
  out = run_cli("tokenize --tokenizer /nonexistent.json", "x", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("hybridlm: error: /nonexistent.json: cannot open"), std::string::npos) << out;
}

}  // namespace
}  // namespace hlm
