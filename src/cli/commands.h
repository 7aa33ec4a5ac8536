// The subcommands of the hybridlm binary: each file in cli/ adds one to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace hlm::cli {

void add_version_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_preprocess_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_grads_command(CLI::App& app);

}  // namespace hlm::cli
