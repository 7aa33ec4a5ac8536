// `hybridlm preprocess`: text / JSONL files -> Megatron indexed dataset (PREFIX.bin + PREFIX.idx),
// with a progress line on a terminal and no output left behind when interrupted or failing.
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "io/preprocess.h"

namespace hlm::cli {
namespace {

// What the signal handler may touch: paths fixed before the temp files exist, and atomics.
enum : int { kIdle = 0, kWriting = 1, kCommitting = 2 };
std::atomic<int> g_state{kIdle};
std::atomic<int> g_signal{0};
std::string g_bin_tmp, g_idx_tmp;

void write_stderr(const char* s) {
  ssize_t ignored = ::write(STDERR_FILENO, s, std::char_traits<char>::length(s));
  (void)ignored;
}

// Async-signal-safe: unlink, write and _exit only. While the temp files are being renamed into
// place the signal is only recorded; the main thread acts on it once the commit is over.
extern "C" void on_terminate_signal(int sig) {
  g_signal.store(sig);
  int state = g_state.load();
  if (state == kCommitting) return;
  if (state == kWriting) {
    ::unlink(g_bin_tmp.c_str());
    ::unlink(g_idx_tmp.c_str());
    write_stderr(
        "\nhybridlm: preprocess interrupted: temporary files removed, no dataset written\n");
  }
  ::_exit(128 + sig);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_terminate_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

void restore_signal_handlers() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, SIG_DFL);
}

std::string format_duration(double s) {
  auto t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{}:{:02}", t / 60, t % 60);
}

}  // namespace

void add_preprocess_command(CLI::App& app) {
  struct Options {
    std::string tokenizer;
    PreprocessOptions pre;
  };
  auto opt = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "preprocess",
      "Tokenize text files (one document each) or .jsonl files (one document per line) into a "
      "Megatron indexed dataset PREFIX.bin + PREFIX.idx");
  cmd->add_option("--tokenizer", opt->tokenizer, "HF tokenizer.json")->required();
  cmd->add_option("--input", opt->pre.inputs,
                  "Input files, directories or glob patterns (repeatable)")
      ->required();
  cmd->add_option("--output-prefix", opt->pre.output_prefix, "Writes PREFIX.bin and PREFIX.idx")
      ->required();
  cmd->add_option("--jsonl-key", opt->pre.jsonl_key, "JSON field holding the text in .jsonl inputs")
      ->capture_default_str();
  cmd->add_flag("--append-eod,!--no-eod", opt->pre.append_eod,
                "End every document with <|endoftext|> (default: on)");
  cmd->add_option("--workers", opt->pre.workers, "Tokenizing threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([opt] {
    Tokenizer tok = Tokenizer::load(opt->tokenizer);
    const bool tty = ::isatty(STDERR_FILENO) == 1;
    double last_draw = -1;
    PreprocessHooks hooks;
    hooks.on_writer_open = [](const IndexedDatasetWriter& w) {
      g_bin_tmp = w.bin_tmp_path();
      g_idx_tmp = w.idx_tmp_path();
      g_state.store(kWriting);
    };
    hooks.on_commit_begin = [] { g_state.store(kCommitting); };
    hooks.on_commit_end = [] { g_state.store(kIdle); };
    hooks.on_progress = [&](const PreprocessProgress& p) {
      if (!tty || p.seconds - last_draw < 0.2) return;
      last_draw = p.seconds;
      double mb = static_cast<double>(p.bytes) / 1e6, rate = mb / std::max(p.seconds, 1e-9);
      std::string eta = "?";
      if (p.total_bytes > 0 && p.bytes > 0) {
        double left =
            static_cast<double>(std::max<int64_t>(p.total_bytes - p.bytes, 0)) / 1e6 / rate;
        eta = format_duration(left);
      }
      fmt::print(stderr,
                 "\r\033[K[preprocess] {} documents | {:.1f} / {:.1f} MB | {:.1f} MB/s | ETA {}",
                 p.documents, mb, static_cast<double>(p.total_bytes) / 1e6, rate, eta);
      std::fflush(stderr);
    };
    install_signal_handlers();
    PreprocessStats s;
    try {
      s = preprocess(tok, opt->pre, hooks);
    } catch (...) {
      g_state.store(kIdle);  // the writer has removed its temp files while unwinding
      if (tty) fmt::print(stderr, "\r\033[K");
      throw;
    }
    restore_signal_handlers();
    if (tty) fmt::print(stderr, "\r\033[K");
    fmt::print(
        stderr,
        "preprocess: {} documents ({} empty skipped), {} tokens, {:.2f} MB of text in {:.2f} s "
        "({:.1f} MB/s) -> {}.bin/.idx ({}, eod {})\n",
        s.documents, s.empty_skipped, s.tokens, static_cast<double>(s.bytes) / 1e6, s.seconds,
        static_cast<double>(s.bytes) / 1e6 / std::max(s.seconds, 1e-9), opt->pre.output_prefix,
        token_dtype_name(s.dtype), s.eod >= 0 ? std::to_string(s.eod) : "none");
    if (int sig = g_signal.load(); sig != 0) {
      fail(ErrorKind::Io,
           "interrupted by signal {} while the dataset was being renamed into place; "
           "{}.bin/.idx are complete",
           sig, opt->pre.output_prefix);
    }
  });
}

}  // namespace hlm::cli
