// `hybridlm version`: build information.
#include <fmt/format.h>

#include "cli/commands.h"
#include "core/memory.h"

namespace hlm::cli {

void add_version_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "Print the version and the backends built in");
  cmd->callback([] {
#ifdef HLM_CUDA
    const char* cuda = hlm::cuda_available() ? "built, device present" : "built, no device";
#else
    const char* cuda = "not built";
#endif
    fmt::print("hybridlm 0.1.0\nCPU backend: yes (OpenBLAS, OpenMP)\nCUDA backend: {}\n", cuda);
  });
}

}  // namespace hlm::cli
