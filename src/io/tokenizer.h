// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (GPT-2, GPT-NeoX, Llama-3
// style): added tokens, normalizer, pre-tokenizer regexes, BPE merges and the ByteLevel decoder,
// giving the same ids as HF `tokenizers` (encode without post-processor specials, decode without
// skipping).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hlm {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = true;    // matched on the normalised text (else on the raw text, before it)
  bool lstrip = false;       // swallows whitespace on its left
  bool rstrip = false;       // swallows whitespace on its right
  bool single_word = false;  // only matches with no word character on either side
};

class Tokenizer {
 public:
  // Reads and checks a tokenizer.json; errors are ErrorKind::Io (cannot read), Format (not valid
  // JSON, a missing or malformed field, a merge naming an unknown token) or Unsupported (a model,
  // normalizer, pre-tokenizer or decoder type that is not byte-level BPE), all naming the file.
  static Tokenizer load(const std::string& path);
  // Same from the JSON text; `name` is used in error messages.
  static Tokenizer from_json_text(std::string_view json_text, const std::string& name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text must be valid UTF-8 (ErrorKind::InvalidArgument naming the byte offset otherwise).
  // Thread-safe: many threads may encode with one tokenizer.
  std::vector<int32_t> encode(std::string_view text) const;
  void encode_append(std::string_view text, std::vector<int32_t>& ids) const;
  // Ids to text: token bytes concatenated, invalid UTF-8 replaced by U+FFFD as HF does. An id out
  // of range is an InvalidArgument error naming it.
  std::string decode(std::span<const int32_t> ids) const;

  // One past the largest id (model vocabulary and added tokens together).
  int64_t vocab_size() const;
  // Id of a token by its content (added tokens first, then the model vocabulary, byte-level form).
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token's string as stored (byte-level form for model tokens, content for added tokens).
  const std::string& id_to_token(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;
  // Id of "<|endoftext|>" when the tokenizer has it (the end-of-document token of GPT-2 / NeoX).
  std::optional<int32_t> eod_id() const;
  const std::string& name() const;

  struct Impl;  // opaque; public so the loader's helpers can fill it

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether `s` is valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF); on failure
// *bad_offset is the offset of the first byte of the offending sequence.
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// Bytes to text as Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes U+FFFD.
std::string utf8_lossy(std::string_view bytes);

}  // namespace hlm
