// Checkpoint folders: Hub-name mapping, validation against the parameter table, conversion into
// the arena, and atomic saving.
#include "model/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "io/convert.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/hf_config.h"

namespace hlm {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

// "a, b, c and 7 more"
std::string list_some(const std::vector<std::string>& items, size_t limit = 12) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += fmt::format(" and {} more", items.size() - limit);
  return out;
}

Tensor arena_view(const Tensor& arena, const ParamSpec& p) {
  return Tensor(arena.at_offset(p.offset), arena.dtype, arena.device, Shape(p.shape.data(), p.shape.size()));
}

void check_arena(const Tensor& arena, const std::vector<ParamSpec>& table, bool for_load) {
  HLM_CHECK_ARG(arena.defined() && arena.is_contiguous(), "weights arena must be a contiguous tensor");
  HLM_CHECK_ARG(arena.dtype == DType::F32 || arena.dtype == DType::F64,
                "weights arena must be F32 or F64, got {}", dtype_name(arena.dtype));
  HLM_CHECK_ARG(!for_load || arena.device == Device::CPU, "checkpoints load into a CPU arena, got {}",
                arena.describe());
  HLM_CHECK_ARG(arena.numel() >= param_arena_numel(table), "weights arena has {} elements, the table needs {}",
                arena.numel(), param_arena_numel(table));
}

// Files a checkpoint folder may hold; anything else makes save_checkpoint refuse to replace it.
bool is_checkpoint_file(const std::string& name) {
  return name == "config.json" || name == "model.safetensors" || name == "model.safetensors.index.json" ||
         name == "generation_config.json" ||
         (starts_with(name, "model-") && name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0);
}

}  // namespace

std::string hub_param_name(const std::string& key, const std::string& model_type) {
  if (starts_with(key, "lm_head.")) return key;
  if (model_type == "nemotron_h" && starts_with(key, "mtp.")) return "";
  std::string rest;
  if (starts_with(key, "backbone.")) rest = key.substr(9);
  else if (starts_with(key, "model.")) rest = key.substr(6);
  else return key;
  if (rest == "embedding.weight") rest = "embeddings.weight";
  return "backbone." + rest;
}

ModelConfig load_checkpoint_config(const std::string& dir) { return read_hf_config(dir); }

CheckpointLoadInfo load_checkpoint_weights(const std::string& path, const ModelConfig& cfg,
                                           const std::vector<ParamSpec>& table, const Tensor& arena) {
  check_arena(arena, table, true);
  SafetensorsShards files(path);
  CheckpointLoadInfo info;
  info.source = files.source();
  for (const auto& f : files.files()) f->will_need();

  // Hub name -> file key; keys transformers ignores are noted, two keys for one name fail.
  std::unordered_map<std::string, std::string> key_of;
  std::vector<std::string> duplicate, unexpected, bad_shape, bad_dtype, missing;
  std::vector<std::string> ignored;
  for (const std::string& key : files.names()) {
    std::string hub = hub_param_name(key, cfg.model_type);
    if (hub.empty()) {
      ignored.push_back(key);
      continue;
    }
    auto [it, fresh] = key_of.emplace(hub, key);
    if (!fresh) duplicate.push_back(fmt::format("{} (as '{}' and '{}')", hub, it->second, key));
  }
  if (!ignored.empty())
    info.notes.push_back(fmt::format("ignored {} tensor(s) transformers ignores too: {}", ignored.size(),
                                     list_some(ignored, 4)));

  std::unordered_map<std::string, const ParamSpec*> spec_of;
  for (const auto& p : table) spec_of.emplace(p.name, &p);
  for (const auto& p : table) {
    auto it = key_of.find(p.name);
    if (it == key_of.end()) {
      missing.push_back(p.name);
      continue;
    }
    const SafetensorsInfo* e = files.find(it->second);
    if (e->shape != p.shape)
      bad_shape.push_back(fmt::format("{} is {} in the file, the model needs {}", it->second, e->shape_str(),
                                      shape_text(p.shape)));
    if (!e->supported || !is_float(e->dtype))
      bad_dtype.push_back(fmt::format("{} ({})", it->second, e->dtype_name));
  }
  // lm_head.weight with tied embeddings is judged below; everything else left over is unexpected.
  const bool tied_head_in_file = cfg.tie_embeddings && key_of.count("lm_head.weight");
  for (const auto& [hub, key] : key_of)
    if (!spec_of.count(hub) && !(tied_head_in_file && hub == "lm_head.weight")) unexpected.push_back(key);
  std::sort(unexpected.begin(), unexpected.end());

  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back(fmt::format("{} missing: {}", missing.size(), list_some(missing)));
  if (!unexpected.empty())
    problems.push_back(fmt::format("{} unexpected: {}", unexpected.size(), list_some(unexpected)));
  if (!bad_shape.empty())
    problems.push_back(fmt::format("{} with the wrong shape: {}", bad_shape.size(), list_some(bad_shape)));
  if (!bad_dtype.empty())
    problems.push_back(fmt::format("{} not stored as floats: {}", bad_dtype.size(), list_some(bad_dtype)));
  if (!duplicate.empty())
    problems.push_back(fmt::format("{} stored twice: {}", duplicate.size(), list_some(duplicate)));
  if (!problems.empty()) {
    std::string msg = problems[0];
    for (size_t i = 1; i < problems.size(); ++i) msg += "; " + problems[i];
    fail(ErrorKind::Format, "{}: the checkpoint does not match the model ({}): {}", info.source, cfg.summary(),
         msg);
  }

  // Copy, converting to the arena dtype, in chunks spread over the threads in one parallel region
  // (one barrier for the whole load, and dynamic scheduling copes with a busy machine); zero the
  // alignment padding between tensors.
  struct Piece {
    void* dst;
    const void* src;
    DType src_type;
    int64_t n;
  };
  constexpr int64_t kPiece = int64_t{1} << 20;  // elements
  const size_t es = dtype_size(arena.dtype);
  std::vector<Piece> pieces;
  int64_t filled = 0;
  for (const auto& p : table) {
    if (p.offset > filled)
      std::memset(arena.at_offset(filled), 0, static_cast<size_t>(p.offset - filled) * es);
    const std::string& key = key_of.at(p.name);
    const SafetensorsFile& f = files.file_of(key);
    const SafetensorsInfo& e = *f.find(key);
    const size_t src_es = dtype_size(e.dtype);
    for (int64_t i = 0; i < p.numel(); i += kPiece)
      pieces.push_back({arena.at_offset(p.offset + i), static_cast<const char*>(f.data_of(e)) + static_cast<size_t>(i) * src_es,
                        e.dtype, std::min(kPiece, p.numel() - i)});
    filled = p.offset + p.numel();
    info.tensors += 1;
    info.bytes += static_cast<int64_t>(e.end - e.begin);
  }
  int64_t total = param_arena_numel(table);
  if (total > filled) std::memset(arena.at_offset(filled), 0, static_cast<size_t>(total - filled) * es);
  const int64_t n_pieces = static_cast<int64_t>(pieces.size());
  const DType dst_type = arena.dtype;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n_pieces; ++i) {
    const Piece& pc = pieces[static_cast<size_t>(i)];
    convert_elements(pc.dst, dst_type, pc.src, pc.src_type, pc.n, /*threaded=*/false);
  }

  if (tied_head_in_file) {
    const std::string& key = key_of.at("lm_head.weight");
    const SafetensorsFile& f = files.file_of(key);
    const SafetensorsInfo& e = *f.find(key);
    const ParamSpec* emb = spec_of.at("backbone.embeddings.weight");
    bool equal = false;
    if (e.shape == emb->shape && e.supported && is_float(e.dtype)) {
      std::vector<unsigned char> head(static_cast<size_t>(emb->numel()) * es);
      convert_elements(head.data(), arena.dtype, f.data_of(e), e.dtype, emb->numel());
      equal = std::memcmp(head.data(), arena.at_offset(emb->offset), head.size()) == 0;
    }
    // transformers 5.17 unties a tied model whose file holds a different head (and NemotronH never
    // ties): a tied ModelConfig cannot compute that, so only an equal head is accepted.
    HLM_REQUIRE(equal, ErrorKind::Format,
                "{}: the config ties lm_head to the embeddings, but {} in the file differs from them, and "
                "transformers would then use it as a separate head: set tie_word_embeddings to false in "
                "config.json",
                info.source, key);
    info.notes.push_back(fmt::format("{}: equals the embeddings (tied), not loaded separately", key));
  }
  return info;
}

void save_checkpoint(const std::string& dir, const ModelConfig& cfg, const std::vector<ParamSpec>& table,
                     const Tensor& arena, DType file_dtype) {
  check_arena(arena, table, false);
  HLM_CHECK_ARG(is_float(file_dtype), "{}: checkpoint dtype must be a float type, got {}", dir,
                dtype_name(file_dtype));
  std::string target = dir;
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  const std::string parent = parent_dir(target);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail(ErrorKind::Io, "{}: cannot create folder {}: {}", target, parent, ec.message());

  // Refuse to replace a folder that holds anything but a checkpoint.
  const bool exists = fs::exists(target, ec);
  if (exists) {
    HLM_REQUIRE(fs::is_directory(target, ec), ErrorKind::Io, "{}: exists and is not a folder", target);
    for (const auto& entry : fs::directory_iterator(target, ec)) {
      std::string name = entry.path().filename().string();
      HLM_REQUIRE(is_checkpoint_file(name), ErrorKind::Io,
                  "{}: exists and holds '{}', which is not part of a checkpoint: refusing to replace it",
                  target, name);
    }
  }

  std::vector<SafetensorsItem> items;
  items.reserve(table.size() + 1);
  for (const auto& p : table) items.emplace_back(p.name, arena_view(arena, p), file_dtype);
  if (cfg.tie_embeddings && cfg.model_type == "nemotron_h") {
    for (const auto& p : table)
      if (p.name == "backbone.embeddings.weight") items.emplace_back("lm_head.weight", arena_view(arena, p), file_dtype);
  }

  std::string tmpl = target + ".tmp-XXXXXX";
  if (!::mkdtemp(tmpl.data())) fail(ErrorKind::Io, "{}: cannot create temp folder: {}", target, std::strerror(errno));
  const std::string tmp = tmpl;
  // mkdtemp makes the folder private (0700); a checkpoint gets the usual mode.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(tmp.c_str(), 0777 & ~mask);
  try {
    write_hf_config(tmp + "/config.json", cfg, file_dtype);
    write_safetensors(tmp + "/model.safetensors", items, {{"format", "pt"}});
    if (!exists) {
      if (::rename(tmp.c_str(), target.c_str()) != 0)
        fail(ErrorKind::Io, "{}: cannot rename {} to it: {}", target, tmp, std::strerror(errno));
    } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
      // No atomic exchange on this file system: move the old folder aside, then the new one in.
      std::string old = target + ".old-" + std::to_string(::getpid());
      if (::rename(target.c_str(), old.c_str()) != 0)
        fail(ErrorKind::Io, "{}: cannot move the old checkpoint aside: {}", target, std::strerror(errno));
      if (::rename(tmp.c_str(), target.c_str()) != 0) {
        int e = errno;
        (void)::rename(old.c_str(), target.c_str());
        fail(ErrorKind::Io, "{}: cannot rename {} to it: {}", target, tmp, std::strerror(e));
      }
      fs::remove_all(old, ec);
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  // After an exchange, tmp holds the old checkpoint.
  fs::remove_all(tmp, ec);
  fsync_dir(parent);
}

}  // namespace hlm
