// `hybridlm tokenize`: stdin text -> token ids (or, with --decode, ids -> text) with a
// tokenizer.json.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "io/tokenizer.h"

namespace hlm::cli {
namespace {

std::string read_all_stdin() {
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) data.append(buf, n);
  if (std::ferror(stdin)) fail(ErrorKind::Io, "stdin: read error: {}", std::strerror(errno));
  return data;
}

// Ids as whitespace- or comma-separated integers, or one JSON array.
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorKind::InvalidArgument, "stdin: not a JSON array of ids: {}", e.what());
    }
    for (const auto& v : j) {
      if (!v.is_number_integer())
        fail(ErrorKind::InvalidArgument, "stdin: '{}' is not a token id", v.dump());
      ids.push_back(v.get<int32_t>());
    }
    return ids;
  }
  size_t i = 0;
  while (i < text.size()) {
    if (std::strchr(" \t\r\n,", text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !std::strchr(" \t\r\n,", text[j])) ++j;
    int32_t id = 0;
    auto [end, ec] = std::from_chars(text.data() + i, text.data() + j, id);
    if (ec != std::errc() || end != text.data() + j) {
      fail(ErrorKind::InvalidArgument, "stdin: '{}' is not a token id", text.substr(i, j - i));
    }
    ids.push_back(id);
    i = j;
  }
  return ids;
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string tokenizer;
    bool json = false;
    bool decode = false;
  };
  auto opt = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("tokenize",
                                 "Encode all of stdin (UTF-8, taken as is) to token ids, or decode "
                                 "ids from stdin with --decode");
  cmd->add_option("--tokenizer", opt->tokenizer, "HF tokenizer.json")->required();
  cmd->add_flag("--json", opt->json, "Print the ids as a JSON array");
  cmd->add_flag(
      "--decode", opt->decode,
      "Read ids (whitespace/comma separated, or a JSON array) and print the text, without "
      "an added newline");
  cmd->callback([opt] {
    Tokenizer tok = Tokenizer::load(opt->tokenizer);
    std::string input = read_all_stdin();
    if (opt->decode) {
      std::string text = tok.decode(parse_ids(input));
      std::fwrite(text.data(), 1, text.size(), stdout);
      return;
    }
    std::vector<int32_t> ids = with_context("stdin", [&] { return tok.encode(input); });
    if (opt->json) {
      fmt::print("[{}]\n", fmt::join(ids, ","));
    } else {
      fmt::print("{}\n", fmt::join(ids, " "));
    }
  });
}

}  // namespace hlm::cli
