// Training checkpoints, written atomically.
#include "train/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "io/file.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"

namespace hlm {

namespace fs = std::filesystem;

namespace {
constexpr const char* kPrefix = "step-";

int64_t step_of(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() != 13) return -1;
  int64_t s = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    s = s * 10 + (name[i] - '0');
  }
  return s;
}
}  // namespace

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  HLM_REQUIRE(!ec, ErrorKind::Io, "{}: cannot create folder: {}", path, ec.message());
}

namespace {
// Host copy of a flat device tensor (or the tensor itself on the CPU).
Tensor on_host(const Tensor& t, Buffer& keep) {
  if (t.device == Device::CPU) return t;
  keep = Buffer(Device::CPU, t.nbytes());
  Tensor h = keep.as(t.dtype, Shape(t.shape.data(), static_cast<size_t>(t.ndim)));
  copy_tensor(h, t);
  return h;
}
}  // namespace

std::string save_training_checkpoint(const std::string& out_dir, int64_t step, const Model& model,
                                     const AdamW& adamw, const nlohmann::json& trainer_state,
                                     const std::vector<std::string>& extra_files) {
  const std::string root = out_dir + "/checkpoints";
  make_dirs(root);
  const std::string name = fmt::format("{}{:08}", kPrefix, step);
  const std::string final_dir = root + "/" + name;
  const std::string tmp = fmt::format("{}/.{}.tmp-{}", root, name, getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    Buffer p_buf, m_buf, v_buf;
    save_checkpoint(tmp, model.config(), model.table(), on_host(model.params(), p_buf), DType::F32);
    write_safetensors(tmp + "/optimizer.safetensors",
                      {SafetensorsItem("exp_avg", on_host(adamw.m(), m_buf)),
                       SafetensorsItem("exp_avg_sq", on_host(adamw.v(), v_buf))},
                      {{"format", "hybridlm-adamw"}, {"step", std::to_string(adamw.steps_done())}});
    write_file_atomic(tmp + "/trainer_state.json", dump_json(trainer_state));
    for (const std::string& f : extra_files) {
      fs::copy_file(f, tmp + "/" + fs::path(f).filename().string(), fs::copy_options::overwrite_existing, ec);
      HLM_REQUIRE(!ec, ErrorKind::Io, "{}: cannot copy into the checkpoint: {}", f, ec.message());
    }
    fsync_dir(tmp);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    fsync_dir(root);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return final_dir;
}

nlohmann::json load_training_checkpoint(const std::string& dir, Model& model, AdamW& adamw) {
  return with_context(dir, [&] {
    if (model.device() == Device::CPU) {
      load_checkpoint_weights(dir, model.config(), model.table(), model.params());
    } else {
      Buffer host(Device::CPU, model.params().nbytes());
      Tensor h = host.as(model.master_dtype(), {model.params().numel()});
      load_checkpoint_weights(dir, model.config(), model.table(), h);
      copy_tensor(model.params(), h);
    }
    model.sync_working_copy();
    SafetensorsFile opt(dir + "/optimizer.safetensors");
    for (auto [key, dst] : {std::pair<const char*, Tensor>{"exp_avg", adamw.m()}, {"exp_avg_sq", adamw.v()}}) {
      Tensor src = opt.tensor(key);
      HLM_REQUIRE(src.dtype == dst.dtype && src.numel() == dst.numel(), ErrorKind::Format,
                  "optimizer.safetensors: '{}' is {} but the model needs {} [{}]", key, src.describe(),
                  dtype_name(dst.dtype), dst.numel());
      device_copy(dst.data, dst.device, src.data, Device::CPU, src.nbytes());
    }
    auto it = opt.metadata().find("step");
    HLM_REQUIRE(it != opt.metadata().end(), ErrorKind::Format, "optimizer.safetensors: no 'step' metadata");
    adamw.set_steps_done(std::stoll(it->second));
    return read_json_file(dir + "/trainer_state.json");
  });
}

std::string latest_checkpoint(const std::string& out_dir) {
  const std::string root = out_dir + "/checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  int64_t best = -1;
  std::string best_dir;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    int64_t s = step_of(e.path().filename().string());
    if (s > best && e.is_directory()) {
      best = s;
      best_dir = e.path().string();
    }
  }
  return best_dir;
}

void prune_checkpoints(const std::string& out_dir, int64_t keep) {
  const std::string root = out_dir + "/checkpoints";
  std::error_code ec;
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    std::string n = e.path().filename().string();
    int64_t s = step_of(n);
    if (s >= 0) found.emplace_back(s, e.path());
    else if (n.rfind(".step-", 0) == 0 && n.find(fmt::format(".tmp-{}", getpid())) == std::string::npos)
      fs::remove_all(e.path(), ec);  // a temporary left by an interrupted run
  }
  std::sort(found.begin(), found.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) fs::remove_all(found[i].second, ec);
}

}  // namespace hlm
