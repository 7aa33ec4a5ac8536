// hybridlm: one binary, one subcommand per job. Every failure ends here as one clear line and a
// non-zero exit.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"hybridlm: train, fine-tune and serve hybrid Mamba-2 / attention language models"};
  app.require_subcommand(1);
  // A flag given twice takes its last value (scripts append overrides).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  hlm::cli::add_version_command(app);
  hlm::cli::add_tokenize_command(app);
  hlm::cli::add_preprocess_command(app);
  hlm::cli::add_train_command(app);
  hlm::cli::add_generate_command(app);
  hlm::cli::add_logits_command(app);
  hlm::cli::add_grads_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const hlm::Error& e) {
    fmt::print(stderr, "hybridlm: error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "hybridlm: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "hybridlm: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
