// safetensors reading (mmap + validation), sharded index, and atomic writing.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/memory.h"
#include "io/convert.h"
#include "io/file.h"
#include "io/json.h"

namespace hlm {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

// Every dtype name of the safetensors spec with its element size, and our DType where we have one.
struct SpecDType {
  const char* name;
  uint64_t size;
  bool supported;
  DType dtype;
};
constexpr SpecDType kSpecDTypes[] = {
    {"F64", 8, true, DType::F64},      {"F32", 4, true, DType::F32},
    {"BF16", 2, true, DType::BF16},    {"F16", 2, true, DType::F16},
    {"I64", 8, true, DType::I64},      {"I32", 4, true, DType::I32},
    {"I16", 2, true, DType::I16},      {"I8", 1, true, DType::I8},
    {"U16", 2, true, DType::U16},      {"U8", 1, true, DType::U8},
    {"U64", 8, false, DType::U8},      {"U32", 4, false, DType::U8},
    {"BOOL", 1, false, DType::U8},     {"F8_E4M3", 1, false, DType::U8},
    {"F8_E5M2", 1, false, DType::U8},  {"F8_E8M0", 1, false, DType::U8},
    {"C64", 8, false, DType::U8},
};

const SpecDType* find_spec_dtype(const std::string& name) {
  for (const auto& d : kSpecDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

std::string errno_text() { return std::strerror(errno); }

bool is_folder(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_directory(p, ec);
}
bool is_file(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Parses one header entry; throws Format with the tensor's name (the caller adds the path).
SafetensorsInfo parse_entry(const std::string& name, const nlohmann::json& v) {
  SafetensorsInfo e;
  e.name = name;
  HLM_REQUIRE(!name.empty(), ErrorKind::Format, "a tensor has an empty name");
  HLM_REQUIRE(v.is_object(), ErrorKind::Format, "tensor '{}': entry is not an object", name);
  auto dt = v.find("dtype");
  HLM_REQUIRE(dt != v.end() && dt->is_string(), ErrorKind::Format,
              "tensor '{}': missing or non-string 'dtype'", name);
  e.dtype_name = dt->get<std::string>();
  const SpecDType* spec = find_spec_dtype(e.dtype_name);
  HLM_REQUIRE(spec, ErrorKind::Format, "tensor '{}': unknown dtype '{}'", name, e.dtype_name);
  e.supported = spec->supported;
  e.dtype = spec->dtype;

  auto sh = v.find("shape");
  HLM_REQUIRE(sh != v.end() && sh->is_array(), ErrorKind::Format,
              "tensor '{}': missing or non-list 'shape'", name);
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : *sh) {
    HLM_REQUIRE(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                ErrorKind::Format, "tensor '{}': shape {} must hold non-negative integers", name,
                sh->dump());
    uint64_t n = d.get<uint64_t>();
    HLM_REQUIRE(n <= static_cast<uint64_t>(INT64_MAX), ErrorKind::Format,
                "tensor '{}': shape {} is too large", name, sh->dump());
    e.shape.push_back(static_cast<int64_t>(n));
    overflow |= __builtin_mul_overflow(numel, n, &numel);
  }
  uint64_t bytes = 0;
  overflow |= __builtin_mul_overflow(numel, spec->size, &bytes);
  HLM_REQUIRE(!overflow, ErrorKind::Format, "tensor '{}': shape {} overflows 64 bits", name,
              sh->dump());

  auto off = v.find("data_offsets");
  HLM_REQUIRE(off != v.end() && off->is_array() && off->size() == 2 &&
                  (*off)[0].is_number_unsigned() && (*off)[1].is_number_unsigned(),
              ErrorKind::Format, "tensor '{}': 'data_offsets' must be [begin, end] (non-negative integers)",
              name);
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  HLM_REQUIRE(e.begin <= e.end, ErrorKind::Format, "tensor '{}': data_offsets [{}, {}] end before they begin",
              name, e.begin, e.end);
  HLM_REQUIRE(e.end - e.begin == bytes, ErrorKind::Format,
              "tensor '{}': shape {} of {} is {} bytes but data_offsets [{}, {}] span {} bytes", name,
              e.shape_str(), e.dtype_name, bytes, e.begin, e.end, e.end - e.begin);
  return e;
}

}  // namespace

int64_t SafetensorsInfo::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string SafetensorsInfo::shape_str() const {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

// ---------------------------------------------------------------------------------------------
// MappedFile

MappedFile::MappedFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::Io, "{}: cannot open: {}", path, errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string why = errno_text();
    ::close(fd);
    fail(ErrorKind::Io, "{}: cannot stat: {}", path, why);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::Io, "{}: not a regular file", path);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::string why = errno_text();
      ::close(fd);
      fail(ErrorKind::Io, "{}: mmap of {} bytes failed: {}", path, size_, why);
    }
    data_ = static_cast<unsigned char*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(data_, size_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void MappedFile::will_need(size_t offset, size_t bytes) const {
  if (!data_ || offset >= size_) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t start = offset / page * page;
  size_t end = std::min(size_, offset + bytes);
  ::madvise(data_ + start, end - start, MADV_WILLNEED);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  with_context(path, [&] {
    map_ = MappedFile(path);
    const size_t size = map_.size();
    HLM_REQUIRE(size >= 8, ErrorKind::Format,
                "file is {} bytes, too short for the 8-byte header length of a safetensors file", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | map_.data()[i];  // little-endian
    HLM_REQUIRE(n <= kMaxHeaderBytes, ErrorKind::Format,
                "header length {} is implausible (limit {} bytes): not a safetensors file?", n,
                kMaxHeaderBytes);
    HLM_REQUIRE(n <= size - 8, ErrorKind::Format,
                "truncated: header length {} exceeds the {} bytes after the length field", n, size - 8);
    HLM_REQUIRE(n >= 2 && map_.data()[8] == '{', ErrorKind::Format,
                "header does not start with '{{' (not a safetensors file?)");
    data_offset_ = 8 + static_cast<size_t>(n);
    const uint64_t data_size = size - data_offset_;

    nlohmann::json header;
    try {
      header = nlohmann::json::parse(map_.data() + 8, map_.data() + 8 + n);
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorKind::Format, "header is not valid JSON: {}", e.what());
    }
    HLM_REQUIRE(header.is_object(), ErrorKind::Format, "header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        HLM_REQUIRE(it->is_object() || it->is_null(), ErrorKind::Format,
                    "__metadata__ must be an object of string values");
        if (it->is_null()) continue;
        for (auto m = it->begin(); m != it->end(); ++m) {
          HLM_REQUIRE(m->is_string(), ErrorKind::Format,
                      "__metadata__ value of '{}' is not a string: {}", m.key(), m->dump());
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      entries_.push_back(parse_entry(it.key(), *it));
    }

    // Data order; the spec wants the data area covered exactly, without holes or overlaps.
    std::sort(entries_.begin(), entries_.end(), [](const SafetensorsInfo& a, const SafetensorsInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t covered = 0;
    const SafetensorsInfo* prev = nullptr;
    for (const auto& e : entries_) {
      HLM_REQUIRE(e.end <= data_size, ErrorKind::Format,
                  "truncated or bad offsets: tensor '{}' spans bytes [{}, {}) but the data area holds "
                  "{} bytes",
                  e.name, e.begin, e.end, data_size);
      HLM_REQUIRE(e.begin >= covered, ErrorKind::Format,
                  "tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", prev ? prev->name : "", prev ? prev->begin : 0,
                  prev ? prev->end : 0, e.name, e.begin, e.end);
      HLM_REQUIRE(e.begin == covered, ErrorKind::Format,
                  "bytes [{}, {}) before tensor '{}' belong to no tensor", covered, e.begin, e.name);
      covered = e.end;
      prev = &e;
    }
    HLM_REQUIRE(covered == data_size, ErrorKind::Format,
                "the data area holds {} bytes but the tensors cover {} (trailing bytes)", data_size,
                covered);
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].name, i);
  });
}

const SafetensorsInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsInfo* e = find(name);
  HLM_REQUIRE(e, ErrorKind::InvalidArgument, "{}: no tensor named '{}'", path_, name);
  HLM_REQUIRE(e->supported, ErrorKind::Unsupported, "{}: tensor '{}' has dtype {}, which hybridlm does not read",
              path_, name, e->dtype_name);
  HLM_REQUIRE(e->shape.size() <= static_cast<size_t>(kMaxDims), ErrorKind::Unsupported,
              "{}: tensor '{}' has {} dimensions (at most {} supported)", path_, name, e->shape.size(),
              kMaxDims);
  return Tensor(const_cast<void*>(data_of(*e)), e->dtype, Device::CPU,
                Shape(e->shape.data(), e->shape.size()));
}

// ---------------------------------------------------------------------------------------------
// SafetensorsShards

SafetensorsShards::SafetensorsShards(const std::string& path) {
  if (is_folder(path)) {
    std::string single = path + "/model.safetensors";
    std::string index = path + "/model.safetensors.index.json";
    if (is_file(single)) {
      source_ = single;
      add_file(std::make_unique<SafetensorsFile>(single));
    } else if (is_file(index)) {
      open_index(index);
    } else {
      fail(ErrorKind::Io, "{}: no model.safetensors or model.safetensors.index.json in this folder", path);
    }
  } else if (ends_with(path, ".json")) {
    open_index(path);
  } else {
    source_ = path;
    add_file(std::make_unique<SafetensorsFile>(path));
  }
}

void SafetensorsShards::open_index(const std::string& index_path) {
  source_ = index_path;
  nlohmann::json j = read_json_file(index_path);
  with_context(index_path, [&] {
    HLM_REQUIRE(j.is_object(), ErrorKind::Format, "index is not a JSON object");
    auto wm = j.find("weight_map");
    HLM_REQUIRE(wm != j.end() && wm->is_object(), ErrorKind::Format, "missing 'weight_map' object");
    HLM_REQUIRE(!wm->empty(), ErrorKind::Format, "'weight_map' is empty");
    std::map<std::string, std::set<std::string>> by_shard;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      HLM_REQUIRE(it->is_string(), ErrorKind::Format, "weight_map['{}'] is not a file name", it.key());
      std::string shard = it->get<std::string>();
      // Shards live beside the index: refuse paths that would leave the folder.
      HLM_REQUIRE(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
                  ErrorKind::Format, "weight_map['{}'] = '{}' is not a plain file name", it.key(), shard);
      by_shard[shard].insert(it.key());
    }
    const std::string dir = parent_dir(index_path);
    for (const auto& [shard, names] : by_shard) {
      auto f = std::make_unique<SafetensorsFile>(dir + "/" + shard);
      for (const auto& n : names)
        HLM_REQUIRE(f->contains(n), ErrorKind::Format, "weight_map puts '{}' in {}, which has no such tensor",
                    n, shard);
      for (const auto& e : f->entries())
        HLM_REQUIRE(names.count(e.name), ErrorKind::Format,
                    "shard {} holds tensor '{}', which weight_map does not list (or lists elsewhere)", shard,
                    e.name);
      add_file(std::move(f));
    }
  });
}

void SafetensorsShards::add_file(std::unique_ptr<SafetensorsFile> f) {
  size_t idx = files_.size();
  for (const auto& e : f->entries()) {
    auto [it, fresh] = where_.emplace(e.name, std::make_pair(idx, &e));
    HLM_REQUIRE(fresh, ErrorKind::Format, "{}: tensor '{}' is also in {}", f->path(), e.name,
                files_[it->second.first]->path());
  }
  files_.push_back(std::move(f));
}

std::vector<std::string> SafetensorsShards::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, loc] : where_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

const SafetensorsInfo* SafetensorsShards::find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second.second;
}

const SafetensorsFile& SafetensorsShards::file_of(const std::string& name) const {
  auto it = where_.find(name);
  HLM_REQUIRE(it != where_.end(), ErrorKind::InvalidArgument, "{}: no tensor named '{}'", source_, name);
  return *files_[it->second.first];
}

Tensor SafetensorsShards::tensor(const std::string& name) const { return file_of(name).tensor(name); }

// ---------------------------------------------------------------------------------------------
// Writer

void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& it : items) {
    HLM_CHECK_ARG(!it.name.empty(), "{}: a tensor to write has an empty name", path);
    HLM_CHECK_ARG(it.name != "__metadata__", "{}: '__metadata__' is reserved, not a tensor name", path);
    HLM_CHECK_ARG(seen.insert(it.name).second, "{}: tensor '{}' given twice", path, it.name);
    HLM_CHECK_ARG(can_convert(it.tensor.dtype, it.dtype), "{}: tensor '{}': cannot write {} as {}", path,
                  it.name, dtype_name(it.tensor.dtype), dtype_name(it.dtype));
    HLM_CHECK_ARG(it.tensor.defined() || it.tensor.numel() == 0, "{}: tensor '{}' has no data", path,
                  it.name);
  }
  // Largest elements first keeps every tensor aligned to its element size (as the Python writer).
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(items[a].dtype) > dtype_size(items[b].dtype);
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& it = items[i];
    uint64_t bytes = static_cast<uint64_t>(it.tensor.numel()) * dtype_size(it.dtype);
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int d = 0; d < it.tensor.ndim; ++d) shape.push_back(it.tensor.shape[static_cast<size_t>(d)]);
    header[it.name] = {{"dtype", dtype_name(it.dtype)}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));

  write_file_atomic(path, [&](int fd) {
    write_all(fd, len, 8, path);
    write_all(fd, text.data(), text.size(), path);
    constexpr int64_t kStageBytes = int64_t{8} << 20;
    std::vector<unsigned char> stage_in, stage_out;
    for (size_t i : order) {
      const auto& it = items[i];
      const Tensor& t = it.tensor;
      if (t.numel() == 0) continue;
      if (t.device == Device::CPU && t.is_contiguous() && t.dtype == it.dtype) {
        write_all(fd, t.data, t.nbytes(), path);
        continue;
      }
      // Row by row through host staging buffers: copy off the device, convert, write.
      RowView rv = as_rows(t.ndim == 0 ? t.reshape({1}) : t, 1, it.name.c_str());
      const size_t in_es = dtype_size(t.dtype), out_es = dtype_size(it.dtype);
      const int64_t step = std::max<int64_t>(1, kStageBytes / static_cast<int64_t>(std::max(in_es, out_es)));
      stage_in.resize(static_cast<size_t>(std::min(step, rv.cols)) * in_es);
      stage_out.resize(static_cast<size_t>(std::min(step, rv.cols)) * out_es);
      for (int64_t r = 0; r < rv.rows; ++r) {
        const char* row = static_cast<const char*>(rv.data) + static_cast<size_t>(r * rv.ld) * in_es;
        for (int64_t c = 0; c < rv.cols; c += step) {
          int64_t n = std::min(step, rv.cols - c);
          device_copy(stage_in.data(), Device::CPU, row + static_cast<size_t>(c) * in_es, t.device,
                      static_cast<size_t>(n) * in_es);
          convert_elements(stage_out.data(), it.dtype, stage_in.data(), t.dtype, n);
          write_all(fd, stage_out.data(), static_cast<size_t>(n) * out_es, path);
        }
      }
    }
  });
}

}  // namespace hlm
