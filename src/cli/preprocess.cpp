#include "cli/commands.h"
namespace hlm::cli {
void add_preprocess_command(CLI::App&) {}
}
