// Shared subcommand helpers.
#include "cli/common.h"

#include <omp.h>

#include <filesystem>

#include "core/memory.h"
#include "model/checkpoint.h"
#include "train/checkpoint.h"

namespace hlm::cli {

namespace fs = std::filesystem;

void RuntimeFlags::add(CLI::App* cmd) {
  cmd->add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", threads, "CPU threads (default: OMP_NUM_THREADS or all cores)")
      ->check(CLI::Range(0, 1024));
}

Device RuntimeFlags::apply() const {
  if (threads > 0) omp_set_num_threads(threads);
  if (device == "cuda") {
    HLM_REQUIRE(cuda_available(), ErrorKind::Unsupported,
                "--device cuda: {}", 
#ifdef HLM_CUDA
                "no CUDA device is visible"
#else
                "this hybridlm was built without CUDA (use the 'cuda' preset)"
#endif
    );
    return Device::CUDA;
  }
  return Device::CPU;
}

std::vector<int32_t> parse_token_list(const std::string& text, int64_t vocab) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    char ch = text[i];
    if (ch == ' ' || ch == ',' || ch == '\t' || ch == '\n' || ch == '\r') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    HLM_CHECK_ARG(j > i && (j == text.size() || text[j] == ' ' || text[j] == ',' || text[j] == '\t' ||
                            text[j] == '\n' || text[j] == '\r'),
                  "--tokens: '{}' is not a list of non-negative token ids (at character {})", text, i);
    HLM_CHECK_ARG(j - i <= 10, "--tokens: id '{}' is too large", text.substr(i, j - i));
    int64_t v = std::stoll(text.substr(i, j - i));
    HLM_CHECK_ARG(vocab <= 0 || v < vocab, "--tokens: id {} is outside the vocabulary (0..{})", v, vocab - 1);
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  HLM_CHECK_ARG(!ids.empty(), "--tokens: no token ids given");
  return ids;
}

std::string resolve_model_dir(const std::string& path) {
  std::error_code ec;
  HLM_REQUIRE(fs::exists(path, ec), ErrorKind::Io, "{}: no such model folder", path);
  if (fs::exists(fs::path(path) / "config.json", ec)) return path;
  std::string latest = latest_checkpoint(path);
  HLM_REQUIRE(!latest.empty(), ErrorKind::Io,
              "{}: not a model folder (no config.json) and no checkpoints under {}/checkpoints", path, path);
  return latest;
}

std::unique_ptr<Model> load_model(const std::string& dir, Device device) {
  return with_context(dir, [&] {
    ModelConfig cfg = load_checkpoint_config(dir);
    auto m = std::make_unique<Model>(cfg, device, device == Device::CPU ? DType::F32 : DType::BF16);
    if (device == Device::CPU) {
      load_checkpoint_weights(dir, cfg, m->table(), m->params());
    } else {
      Buffer host(Device::CPU, m->params().nbytes());
      Tensor h = host.as(DType::F32, {m->params().numel()});
      load_checkpoint_weights(dir, cfg, m->table(), h);
      copy_tensor(m->params(), h);
    }
    m->sync_working_copy();
    return m;
  });
}

std::optional<std::string> find_tokenizer(const std::string& model_dir, const std::string& flag) {
  if (!flag.empty()) return flag;
  std::error_code ec;
  std::string p = model_dir + "/tokenizer.json";
  if (fs::exists(p, ec)) return p;
  return std::nullopt;
}

}  // namespace hlm::cli
