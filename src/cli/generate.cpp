// `hybridlm generate`: load a model folder, prefill the prompt with the full forward, decode one
// token at a time with the recurrent step, stream the text (or print one JSON object).
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "infer/generator.h"
#include "io/tokenizer.h"

namespace hlm::cli {

namespace {

struct Flags {
  std::string model, tokenizer, prompt, tokens;
  int64_t max_new_tokens = 64;
  int64_t max_context = 8192;
  double temperature = 0.8;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  bool json = false, no_stop = false;
  RuntimeFlags rt;
};

bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

void run(const Flags& f) {
  Device device = f.rt.apply();
  HLM_CHECK_ARG(f.prompt.empty() != f.tokens.empty(), "give exactly one of --prompt TEXT and --tokens \"ID ...\"");
  std::string dir = resolve_model_dir(f.model);
  std::unique_ptr<Model> model = load_model(dir, device);
  const ModelConfig& cfg = model->config();

  std::optional<Tokenizer> tok;
  if (auto path = find_tokenizer(dir, f.tokenizer)) tok.emplace(Tokenizer::load(*path));
  if (tok)
    HLM_CHECK_ARG(tok->vocab_size() <= cfg.vocab_size,
                  "tokenizer {} has {} ids but the model's vocabulary is {}", tok->name(), tok->vocab_size(),
                  cfg.vocab_size);
  std::vector<int32_t> prompt;
  if (!f.prompt.empty()) {
    HLM_CHECK_ARG(tok.has_value(), "--prompt needs a tokenizer: pass --tokenizer FILE (the model folder has no "
                                   "tokenizer.json), or give --tokens");
    prompt = tok->encode(f.prompt);
    HLM_CHECK_ARG(!prompt.empty(), "--prompt encodes to no tokens");
  } else {
    prompt = parse_token_list(f.tokens, cfg.vocab_size);
  }
  HLM_CHECK_ARG(static_cast<int64_t>(prompt.size()) + f.max_new_tokens <= f.max_context,
                "the prompt has {} tokens; with --max-new-tokens {} that exceeds --max-context {}", prompt.size(),
                f.max_new_tokens, f.max_context);

  GenerateOptions opt;
  opt.max_new_tokens = f.max_new_tokens;
  opt.sampling.temperature = f.temperature;
  opt.sampling.top_k = f.top_k;
  opt.sampling.top_p = f.top_p;
  opt.sampling.seed = f.seed;
  if (!f.no_stop) {
    if (tok && tok->eod_id()) opt.stop_ids.push_back(*tok->eod_id());
    else if (cfg.eos_token_id >= 0) opt.stop_ids.push_back(static_cast<int32_t>(cfg.eos_token_id));
  }

  std::vector<int32_t> generated;
  size_t printed = 0;
  TokenCallback stream = nullptr;
  if (!f.json && tok) {
    fmt::print("{}", f.prompt.empty() ? tok->decode(prompt) : f.prompt);
    std::fflush(stdout);
    stream = [&](int64_t, int32_t id) {
      generated.push_back(id);
      std::string text = tok->decode(generated);
      size_t end = ends_with_replacement(text) ? text.size() - 3 : text.size();
      if (end > printed) {
        fmt::print("{}", text.substr(printed, end - printed));
        std::fflush(stdout);
        printed = end;
      }
      return true;
    };
  }
  GenerateResult res = generate(*model, {prompt}, opt, stream);
  const std::vector<int32_t>& out = res.tokens[0];
  if (f.json) {
    nlohmann::json j;
    j["tokens"] = out;
    j["text"] = tok ? tok->decode(out) : std::string();
    j["prompt_tokens"] = prompt.size();
    fmt::print("{}\n", j.dump());
  } else if (tok) {
    std::string text = tok->decode(generated);
    if (text.size() > printed) fmt::print("{}", text.substr(printed));
    fmt::print("\n");
  } else {
    for (size_t i = 0; i < out.size(); ++i) fmt::print("{}{}", i ? " " : "", out[i]);
    fmt::print("\n");
  }
  const double tps = res.decode_steps > 0 ? static_cast<double>(res.decode_steps) / res.decode_seconds : 0;
  fmt::print(stderr, "[{} prompt tokens, prefill {:.1f} ms; {} new tokens, {:.1f} tokens/s]\n", prompt.size(),
             res.prefill_seconds * 1e3, out.size(), tps);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a model folder");
  cmd->add_option("--model", f->model, "model folder, or a train --out folder (its newest checkpoint)")
      ->required();
  cmd->add_option("--tokenizer", f->tokenizer, "tokenizer.json (default: the model folder's)");
  cmd->add_option("--prompt", f->prompt, "prompt text");
  cmd->add_option("--tokens", f->tokens, "prompt token ids instead of text, e.g. \"12 34 56\"");
  cmd->add_option("--max-new-tokens", f->max_new_tokens, "tokens to generate")->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--max-context", f->max_context, "longest prompt + generation allowed")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22));
  cmd->add_option("--temperature", f->temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", f->top_k, "keep the k most likely tokens (0 = off)")->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_option("--top-p", f->top_p, "nucleus sampling mass (1 = off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", f->seed, "sampling seed");
  cmd->add_flag("--json", f->json, "print one JSON object {\"tokens\": [...], \"text\": ...} instead of streaming");
  cmd->add_flag("--no-stop", f->no_stop, "do not stop at the end-of-text token");
  f->rt.add(cmd);
  cmd->callback([f] { run(*f); });
}

}  // namespace hlm::cli
