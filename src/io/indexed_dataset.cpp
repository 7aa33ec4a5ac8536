// Megatron-LM indexed dataset: writer (temp files renamed on success) and checked mmap reader.
// The .idx layout (all little-endian): "MMIDIDX\0\0", u64 version = 1, u8 dtype code, u64 sequence
// count S, u64 document-index count D (documents + 1), i32 lengths[S], i64 byte pointers[S],
// i64 document index[D] (0, ..., S).
#include "io/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace hlm {

static_assert(std::endian::native == std::endian::little, "the .bin/.idx format is little-endian");

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // .idx arrays start at byte 34: not aligned
  return v;
}

bool valid_dtype_code(uint8_t c) { return c >= 1 && c <= 8; }

}  // namespace

size_t token_dtype_size(TokenDType t) {
  switch (t) {
    case TokenDType::U8:
    case TokenDType::I8: return 1;
    case TokenDType::I16:
    case TokenDType::U16: return 2;
    case TokenDType::I32:
    case TokenDType::F32: return 4;
    case TokenDType::I64:
    case TokenDType::F64: return 8;
  }
  return 0;
}

const char* token_dtype_name(TokenDType t) {
  switch (t) {
    case TokenDType::U8: return "uint8";
    case TokenDType::I8: return "int8";
    case TokenDType::I16: return "int16";
    case TokenDType::I32: return "int32";
    case TokenDType::I64: return "int64";
    case TokenDType::F64: return "float64";
    case TokenDType::F32: return "float32";
    case TokenDType::U16: return "uint16";
  }
  return "?";
}

TokenDType token_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDType::U16 : TokenDType::I32;
}

std::string idx_path(const std::string& prefix) { return prefix + ".idx"; }
std::string bin_path(const std::string& prefix) { return prefix + ".bin"; }

// ---------------------------------------------------------------------------------------------
// Writer

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDType dtype)
    : prefix_(std::move(prefix)),
      bin_tmp_(bin_path(prefix_) + ".tmp"),
      idx_tmp_(idx_path(prefix_) + ".tmp"),
      dtype_(dtype) {
  if (dtype != TokenDType::U16 && dtype != TokenDType::I32 && dtype != TokenDType::I64 &&
      dtype != TokenDType::U8 && dtype != TokenDType::I16 && dtype != TokenDType::I8) {
    fail(ErrorKind::InvalidArgument, "{}: token dtype {} is not an integer type", prefix_,
         token_dtype_name(dtype));
  }
  bin_ = std::fopen(bin_tmp_.c_str(), "wb");
  if (!bin_) fail(ErrorKind::Io, "{}: cannot create: {}", bin_tmp_, std::strerror(errno));
  buffer_.reserve(1 << 20);
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!done_) abort();
}

void IndexedDatasetWriter::abort() {
  if (bin_) {
    std::fclose(bin_);
    bin_ = nullptr;
  }
  std::remove(bin_tmp_.c_str());
  std::remove(idx_tmp_.c_str());
  done_ = true;
}

void IndexedDatasetWriter::flush_buffer() {
  if (buffer_.empty()) return;
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), bin_) != buffer_.size()) {
    fail(ErrorKind::Io, "{}: write failed: {}", bin_tmp_, std::strerror(errno));
  }
  buffer_.clear();
}

void IndexedDatasetWriter::add_sequence(std::span<const int32_t> tokens) {
  HLM_REQUIRE(!done_ && bin_, ErrorKind::Internal, "{}: writer already finished", prefix_);
  HLM_REQUIRE(tokens.size() <= static_cast<size_t>(INT32_MAX), ErrorKind::InvalidArgument,
              "{}: a sequence of {} tokens exceeds the format's int32 length", prefix_,
              tokens.size());
  int64_t lo = 0, hi = 0;
  switch (dtype_) {
    case TokenDType::U8: hi = UINT8_MAX; break;
    case TokenDType::I8:
      lo = INT8_MIN;
      hi = INT8_MAX;
      break;
    case TokenDType::I16:
      lo = INT16_MIN;
      hi = INT16_MAX;
      break;
    case TokenDType::U16: hi = UINT16_MAX; break;
    default:
      lo = INT32_MIN;
      hi = INT32_MAX;
      break;
  }
  const size_t item = token_dtype_size(dtype_);
  size_t at = buffer_.size();
  buffer_.resize(at + tokens.size() * item);
  char* out = buffer_.data() + at;
  for (size_t i = 0; i < tokens.size(); ++i) {
    int32_t t = tokens[i];
    if (t < lo || t > hi) {
      buffer_.resize(at);
      fail(ErrorKind::InvalidArgument, "{}: token id {} does not fit the dataset dtype {}", prefix_,
           t, token_dtype_name(dtype_));
    }
    switch (dtype_) {
      case TokenDType::U8:
      case TokenDType::I8: out[i] = static_cast<char>(t); break;
      case TokenDType::U16:
      case TokenDType::I16: {
        uint16_t v = static_cast<uint16_t>(t);
        std::memcpy(out + 2 * i, &v, 2);
        break;
      }
      case TokenDType::I64: {
        int64_t v = t;
        std::memcpy(out + 8 * i, &v, 8);
        break;
      }
      default: std::memcpy(out + 4 * i, &t, 4); break;
    }
  }
  lengths_.push_back(static_cast<int32_t>(tokens.size()));
  tokens_ += static_cast<int64_t>(tokens.size());
  if (buffer_.size() >= (1 << 20)) flush_buffer();
}

void IndexedDatasetWriter::end_document() { doc_index_.push_back(num_sequences()); }

void IndexedDatasetWriter::add_document(std::span<const int32_t> tokens) {
  add_sequence(tokens);
  end_document();
}

void IndexedDatasetWriter::finish() {
  HLM_REQUIRE(!done_ && bin_, ErrorKind::Internal, "{}: writer already finished", prefix_);
  if (doc_index_.back() != num_sequences()) end_document();  // trailing sequences form a document
  flush_buffer();
  if (std::fflush(bin_) != 0 || ::fsync(fileno(bin_)) != 0) {
    fail(ErrorKind::Io, "{}: write failed: {}", bin_tmp_, std::strerror(errno));
  }
  int rc = std::fclose(bin_);
  bin_ = nullptr;
  if (rc != 0) fail(ErrorKind::Io, "{}: close failed: {}", bin_tmp_, std::strerror(errno));

  std::FILE* idx = std::fopen(idx_tmp_.c_str(), "wb");
  if (!idx) fail(ErrorKind::Io, "{}: cannot create: {}", idx_tmp_, std::strerror(errno));
  std::vector<char> header(kHeaderBytes);
  uint64_t version = 1, seqs = lengths_.size(), docs = doc_index_.size();
  uint8_t code = static_cast<uint8_t>(dtype_);
  char* p = header.data();
  std::memcpy(p, kMagic, 9);
  std::memcpy(p + 9, &version, 8);
  std::memcpy(p + 17, &code, 1);
  std::memcpy(p + 18, &seqs, 8);
  std::memcpy(p + 26, &docs, 8);
  std::vector<int64_t> pointers(lengths_.size());
  int64_t offset = 0;
  for (size_t i = 0; i < lengths_.size(); ++i) {
    pointers[i] = offset;
    offset += static_cast<int64_t>(lengths_[i]) * static_cast<int64_t>(token_dtype_size(dtype_));
  }
  bool ok = std::fwrite(header.data(), 1, header.size(), idx) == header.size() &&
            std::fwrite(lengths_.data(), 4, lengths_.size(), idx) == lengths_.size() &&
            std::fwrite(pointers.data(), 8, pointers.size(), idx) == pointers.size() &&
            std::fwrite(doc_index_.data(), 8, doc_index_.size(), idx) == doc_index_.size() &&
            std::fflush(idx) == 0 && ::fsync(fileno(idx)) == 0;
  int err = errno;
  ok = (std::fclose(idx) == 0) && ok;
  if (!ok) fail(ErrorKind::Io, "{}: write failed: {}", idx_tmp_, std::strerror(err));

  // Old index first, so no moment pairs a new .bin with an old .idx.
  std::string bin = bin_path(prefix_), idxp = idx_path(prefix_);
  if (std::remove(idxp.c_str()) != 0 && errno != ENOENT) {
    fail(ErrorKind::Io, "{}: cannot replace: {}", idxp, std::strerror(errno));
  }
  if (std::rename(bin_tmp_.c_str(), bin.c_str()) != 0) {
    fail(ErrorKind::Io, "{}: cannot rename to {}: {}", bin_tmp_, bin, std::strerror(errno));
  }
  if (std::rename(idx_tmp_.c_str(), idxp.c_str()) != 0) {
    int e = errno;
    std::remove(bin.c_str());
    fail(ErrorKind::Io, "{}: cannot rename to {}: {}", idx_tmp_, idxp, std::strerror(e));
  }
  done_ = true;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

// Maps a whole file read-only; returns null for an empty file.
const unsigned char* map_file(const std::string& path, size_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::Io, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(ErrorKind::Io, "{}: cannot stat: {}", path, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::Io, "{}: not a regular file", path);
  }
  *size = static_cast<size_t>(st.st_size);
  if (*size == 0) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, *size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) fail(ErrorKind::Io, "{}: mmap failed: {}", path, std::strerror(e));
  return static_cast<const unsigned char*>(p);
}

}  // namespace

IndexedDataset::IndexedDataset(const std::string& prefix) : prefix_(prefix) {
  const std::string ipath = idx_path(prefix), bpath = bin_path(prefix);
  try {
    idx_ = map_file(ipath, &idx_size_);
    bin_ = map_file(bpath, &bin_size_);
    with_context(ipath, [&] {
      if (idx_size_ < kHeaderBytes) {
        fail(ErrorKind::Format, "truncated: {} bytes, the header alone needs {}", idx_size_,
             kHeaderBytes);
      }
      if (std::memcmp(idx_, kMagic, 9) != 0) {
        fail(ErrorKind::Format,
             "not a Megatron indexed dataset index (bad magic; expected MMIDIDX)");
      }
      uint64_t version = load<uint64_t>(idx_ + 9);
      if (version != 1) fail(ErrorKind::Format, "unsupported version {} (expected 1)", version);
      uint8_t code = idx_[17];
      if (!valid_dtype_code(code)) fail(ErrorKind::Format, "unknown dtype code {}", code);
      dtype_ = static_cast<TokenDType>(code);
      uint64_t seqs = load<uint64_t>(idx_ + 18), docs = load<uint64_t>(idx_ + 26);
      // Counts come from the file: bound them by its size before multiplying.
      uint64_t room = idx_size_ - kHeaderBytes;
      if (seqs > room / 12 || docs > room / 8 || seqs * 12 + docs * 8 != room) {
        fail(
            ErrorKind::Format,
            "size {} bytes does not match its header ({} sequences, {} document-index entries need "
            "{} bytes): truncated or corrupt",
            idx_size_, seqs, docs,
            seqs <= room && docs <= room ? std::to_string(kHeaderBytes + seqs * 12 + docs * 8)
                                         : "more");
      }
      if (docs < 1) fail(ErrorKind::Format, "document index is empty (it must start with 0)");
      num_sequences_ = static_cast<int64_t>(seqs);
      num_doc_index_ = static_cast<int64_t>(docs);
    });
    with_context(ipath, [&] {
      const size_t item = token_dtype_size(dtype_);
      int64_t total = 0;
      for (int64_t i = 0; i < num_sequences_; ++i) {
        int64_t len = sequence_length(i), ptr = sequence_pointer(i);
        if (len < 0) fail(ErrorKind::Format, "sequence {} has negative length {}", i, len);
        if (ptr < 0 || static_cast<uint64_t>(ptr) % item != 0 ||
            static_cast<uint64_t>(ptr) > bin_size_ ||
            static_cast<uint64_t>(len) * item > bin_size_ - static_cast<uint64_t>(ptr)) {
          fail(
              ErrorKind::Format,
              "sequence {} ({} tokens at byte {}) lies outside {} ({} bytes): truncated or corrupt",
              i, len, ptr, bpath, bin_size_);
        }
        total += len;
      }
      num_tokens_ = total;
      if (document_index(0) != 0)
        fail(ErrorKind::Format, "document index starts at {}, not 0", document_index(0));
      doc_tokens_.assign(static_cast<size_t>(num_documents()), 0);
      for (int64_t d = 0; d < num_documents(); ++d) {
        int64_t a = document_index(d), b = document_index(d + 1);
        if (b < a || b > num_sequences_) {
          fail(ErrorKind::Format,
               "document index entry {} = {} after {} (sequence count {}): corrupt", d + 1, b, a,
               num_sequences_);
        }
        int64_t n = 0;
        for (int64_t s = a; s < b; ++s) n += sequence_length(s);
        doc_tokens_[static_cast<size_t>(d)] = n;
      }
      if (document_index(num_documents()) != num_sequences_) {
        fail(ErrorKind::Format, "document index ends at {} but there are {} sequences",
             document_index(num_documents()), num_sequences_);
      }
    });
  } catch (...) {
    if (idx_) ::munmap(const_cast<unsigned char*>(idx_), idx_size_);
    if (bin_) ::munmap(const_cast<unsigned char*>(bin_), bin_size_);
    throw;
  }
}

IndexedDataset::~IndexedDataset() {
  if (idx_) ::munmap(const_cast<unsigned char*>(idx_), idx_size_);
  if (bin_) ::munmap(const_cast<unsigned char*>(bin_), bin_size_);
}

int64_t IndexedDataset::sequence_length(int64_t i) const {
  return load<int32_t>(idx_ + kHeaderBytes + 4 * static_cast<size_t>(i));
}

int64_t IndexedDataset::sequence_pointer(int64_t i) const {
  return load<int64_t>(idx_ + kHeaderBytes + 4 * static_cast<size_t>(num_sequences_) +
                       8 * static_cast<size_t>(i));
}

int64_t IndexedDataset::document_index(int64_t i) const {
  return load<int64_t>(idx_ + kHeaderBytes + 12 * static_cast<size_t>(num_sequences_) +
                       8 * static_cast<size_t>(i));
}

void IndexedDataset::read_sequence(int64_t seq, int64_t offset, int64_t count, int32_t* out) const {
  HLM_CHECK_ARG(seq >= 0 && seq < num_sequences_, "{}: sequence {} out of range 0..{}", prefix_,
                seq, num_sequences_ - 1);
  int64_t len = sequence_length(seq);
  HLM_CHECK_ARG(offset >= 0 && count >= 0 && offset + count <= len,
                "{}: tokens [{}, {}) outside sequence {} of length {}", prefix_, offset,
                offset + count, seq, len);
  const size_t item = token_dtype_size(dtype_);
  const unsigned char* p =
      bin_ + static_cast<size_t>(sequence_pointer(seq)) + static_cast<size_t>(offset) * item;
  const size_t n = static_cast<size_t>(count);
  switch (dtype_) {
    case TokenDType::U16:
      for (size_t i = 0; i < n; ++i) out[i] = load<uint16_t>(p + 2 * i);
      break;
    case TokenDType::I32: std::memcpy(out, p, n * 4); break;
    case TokenDType::U8:
      for (size_t i = 0; i < n; ++i) out[i] = p[i];
      break;
    case TokenDType::I8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(p[i]);
      break;
    case TokenDType::I16:
      for (size_t i = 0; i < n; ++i) out[i] = load<int16_t>(p + 2 * i);
      break;
    case TokenDType::I64:
      for (size_t i = 0; i < n; ++i) {
        int64_t v = load<int64_t>(p + 8 * i);
        HLM_REQUIRE(v >= INT32_MIN && v <= INT32_MAX, ErrorKind::Format,
                    "{}: token {} of sequence {} does not fit int32", bin_path(prefix_), v, seq);
        out[i] = static_cast<int32_t>(v);
      }
      break;
    case TokenDType::F32:
    case TokenDType::F64:
      fail(ErrorKind::Unsupported, "{}: dtype {} holds no token ids", idx_path(prefix_),
           token_dtype_name(dtype_));
  }
}

std::vector<int32_t> IndexedDataset::sequence(int64_t seq) const {
  HLM_CHECK_ARG(seq >= 0 && seq < num_sequences_, "{}: sequence {} out of range 0..{}", prefix_,
                seq, num_sequences_ - 1);
  std::vector<int32_t> v(static_cast<size_t>(sequence_length(seq)));
  read_sequence(seq, 0, static_cast<int64_t>(v.size()), v.data());
  return v;
}

void IndexedDataset::read_document(int64_t doc, int64_t offset, int64_t count, int32_t* out) const {
  HLM_CHECK_ARG(doc >= 0 && doc < num_documents(), "{}: document {} out of range 0..{}", prefix_,
                doc, num_documents() - 1);
  HLM_CHECK_ARG(offset >= 0 && count >= 0 && offset + count <= document_length(doc),
                "{}: tokens [{}, {}) outside document {} of length {}", prefix_, offset,
                offset + count, doc, document_length(doc));
  for (int64_t s = document_index(doc); s < document_index(doc + 1) && count > 0; ++s) {
    int64_t len = sequence_length(s);
    if (offset >= len) {
      offset -= len;
      continue;
    }
    int64_t take = std::min(count, len - offset);
    read_sequence(s, offset, take, out);
    out += take;
    count -= take;
    offset = 0;
  }
}

std::vector<int32_t> IndexedDataset::document(int64_t doc) const {
  HLM_CHECK_ARG(doc >= 0 && doc < num_documents(), "{}: document {} out of range 0..{}", prefix_,
                doc, num_documents() - 1);
  std::vector<int32_t> v(static_cast<size_t>(document_length(doc)));
  read_document(doc, 0, static_cast<int64_t>(v.size()), v.data());
  return v;
}

}  // namespace hlm
