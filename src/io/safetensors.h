// safetensors files: read by mmap with every header field validated (views onto the mapping, no
// copies), sharded checkpoints through model.safetensors.index.json, and an atomic writer.
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets: [begin, end)}, "__metadata__": {str: str}}, then the data area.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace hlm {

// One tensor's header entry.
struct SafetensorsInfo {
  std::string name;
  std::string dtype_name;  // as spelled in the file: F32, BF16, BOOL, F8_E4M3, ...
  bool supported = false;  // the dtype is one of hybridlm's DTypes (else tensor() refuses)
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the data area
  int64_t numel() const;
  std::string shape_str() const;  // "[2,3]"
};

// A read-only mapping of a whole file.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws Io naming the file
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  // Asks the kernel to read [offset, offset+bytes) ahead (MADV_WILLNEED); a hint only.
  void will_need(size_t offset, size_t bytes) const;

 private:
  unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

// One .safetensors file, mapped and validated on construction. Every malformed file (missing,
// truncated, bad JSON, bad dtype, shape that disagrees with its byte span, offsets outside the data
// area, overlapping or uncovered bytes, bad __metadata__) throws one hlm::Error naming the file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;

  const std::string& path() const { return path_; }
  size_t file_size() const { return map_.size(); }
  size_t data_offset() const { return data_offset_; }  // 8 + header length
  // Entries in data order.
  const std::vector<SafetensorsInfo>& entries() const { return entries_; }
  const SafetensorsInfo* find(const std::string& name) const;  // nullptr when absent
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  // Read-only CPU view onto the mapping (never write through it: the pages are read-only). The
  // data may be unaligned for its dtype when the writer did not pad the header; read it with
  // memcpy or convert_elements. Throws InvalidArgument for an absent name, Unsupported for a
  // dtype hybridlm does not have or more than kMaxDims dimensions.
  Tensor tensor(const std::string& name) const;
  const void* data_of(const SafetensorsInfo& e) const { return map_.data() + data_offset_ + e.begin; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  void will_need() const { map_.will_need(data_offset_, map_.size() - data_offset_); }

 private:
  std::string path_;
  MappedFile map_;
  size_t data_offset_ = 0;
  std::vector<SafetensorsInfo> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The tensors of a checkpoint stored as one file or as shards listed by an index file
// ({"weight_map": {tensor: shard file}}); each shard is opened once.
class SafetensorsShards {
 public:
  // `path` is a .safetensors file, a .safetensors.index.json file, or a folder holding
  // model.safetensors (preferred, as transformers does) or model.safetensors.index.json.
  explicit SafetensorsShards(const std::string& path);

  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // All tensor names, sorted.
  std::vector<std::string> names() const;
  size_t size() const { return where_.size(); }
  const SafetensorsInfo* find(const std::string& name) const;
  const SafetensorsFile& file_of(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  // Path of the file or index this set was opened from (for messages).
  const std::string& source() const { return source_; }

 private:
  void open_index(const std::string& index_path);
  void add_file(std::unique_ptr<SafetensorsFile> f);
  std::string source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, std::pair<size_t, const SafetensorsInfo*>> where_;
};

// One tensor to write: `tensor` may live on any device with any row-view layout; it is written as
// `dtype` (float types convert among F32, F64, BF16, F16; other types must match).
struct SafetensorsItem {
  std::string name;
  Tensor tensor;
  DType dtype;
  SafetensorsItem(std::string n, const Tensor& t) : name(std::move(n)), tensor(t), dtype(t.dtype) {}
  SafetensorsItem(std::string n, const Tensor& t, DType d) : name(std::move(n)), tensor(t), dtype(d) {}
};

// Writes a .safetensors file atomically (temp file in the same folder, fsync, rename): tensors
// in the given order, header padded with spaces to a multiple of 8 bytes so every tensor is
// aligned to its element size. Throws InvalidArgument for duplicate, empty or reserved names.
void write_safetensors(const std::string& path, const std::vector<SafetensorsItem>& items,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace hlm
