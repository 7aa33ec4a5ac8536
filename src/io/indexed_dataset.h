// Megatron-LM indexed dataset (what tools/preprocess_data.py writes): PREFIX.bin holds the tokens
// of every sequence back to back, PREFIX.idx the header, sequence lengths, byte offsets and the
// document index. A streaming writer that renames into place only on success, and an mmap reader
// that checks every count and offset before trusting them.
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace hlm {

// Megatron's DType codes, as stored in the .idx header.
enum class TokenDType : uint8_t {
  U8 = 1,
  I8 = 2,
  I16 = 3,
  I32 = 4,
  I64 = 5,
  F64 = 6,
  F32 = 7,
  U16 = 8
};
size_t token_dtype_size(TokenDType t);
const char* token_dtype_name(TokenDType t);
// u16 when every id of the vocabulary fits (vocab_size <= 65536), else i32.
TokenDType token_dtype_for_vocab(int64_t vocab_size);

std::string idx_path(const std::string& prefix);  // PREFIX.idx
std::string bin_path(const std::string& prefix);  // PREFIX.bin

// Writes PREFIX.bin.tmp as documents arrive and PREFIX.idx.tmp at finish(), then renames both into
// place. Destroyed (or abort()ed) before finish(), it removes its temporary files: a failed run
// leaves nothing behind. Token ids must fit the dtype (checked).
class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(std::string prefix, TokenDType dtype);
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;
  ~IndexedDatasetWriter();

  // One document made of one sequence (what preprocess writes).
  void add_document(std::span<const int32_t> tokens);
  // Megatron's finer form: sequences (sentences) of a document, then end_document().
  void add_sequence(std::span<const int32_t> tokens);
  void end_document();
  // Flushes, writes the index and renames PREFIX.bin.tmp / .idx.tmp to PREFIX.bin / .idx.
  void finish();
  // Removes the temporary files (safe to call twice).
  void abort();

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_documents() const { return static_cast<int64_t>(doc_index_.size()) - 1; }
  int64_t num_tokens() const { return tokens_; }
  const std::string& bin_tmp_path() const { return bin_tmp_; }
  const std::string& idx_tmp_path() const { return idx_tmp_; }

 private:
  void flush_buffer();
  std::string prefix_, bin_tmp_, idx_tmp_;
  TokenDType dtype_;
  std::FILE* bin_ = nullptr;
  std::vector<char> buffer_;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> doc_index_{0};
  int64_t tokens_ = 0;
  bool done_ = false;
};

// Read-only view of PREFIX.bin/.idx through mmap. Opening checks the magic, version, dtype, that
// the counts match the file sizes exactly, that the document index runs from 0 to the sequence
// count without going back, and that every sequence lies inside .bin: a truncated or corrupt file
// gives one ErrorKind::Format error naming the file, never a crash later.
class IndexedDataset {
 public:
  explicit IndexedDataset(const std::string& prefix);
  IndexedDataset(const IndexedDataset&) = delete;
  IndexedDataset& operator=(const IndexedDataset&) = delete;
  ~IndexedDataset();

  const std::string& prefix() const { return prefix_; }
  TokenDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_doc_index_ - 1; }
  int64_t num_tokens() const { return num_tokens_; }

  int64_t sequence_length(int64_t i) const;
  int64_t sequence_pointer(int64_t i) const;  // byte offset in .bin
  int64_t document_index(int64_t i) const;    // i in [0, num_documents]: first sequence of doc i
  // Tokens of document d (all its sequences).
  int64_t document_length(int64_t d) const { return doc_tokens_[static_cast<size_t>(d)]; }

  // Copies `count` tokens of sequence `seq` from `offset` on into out, as int32 (integer dtypes).
  void read_sequence(int64_t seq, int64_t offset, int64_t count, int32_t* out) const;
  std::vector<int32_t> sequence(int64_t seq) const;
  // Same for a document, across its sequences.
  void read_document(int64_t doc, int64_t offset, int64_t count, int32_t* out) const;
  std::vector<int32_t> document(int64_t doc) const;

 private:
  std::string prefix_;
  TokenDType dtype_ = TokenDType::U16;
  int64_t num_sequences_ = 0, num_doc_index_ = 0, num_tokens_ = 0;
  const unsigned char* idx_ = nullptr;  // mapped .idx
  size_t idx_size_ = 0;
  const unsigned char* bin_ = nullptr;  // mapped .bin (null when empty)
  size_t bin_size_ = 0;
  std::vector<int64_t> doc_tokens_;  // tokens per document
};

}  // namespace hlm
