// HF tokenizer.json byte-level BPE. The pipeline follows `tokenizers` step by step so the ids
// agree: split off raw added tokens -> normalise (NFC) -> split off normalised added tokens ->
// pre-tokenizer regexes (PCRE2, Unicode) -> bytes to byte-level symbols -> BPE by merge rank
// (cached per word).
#include "io/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace hlm {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

namespace {

// Length of the valid sequence starting at s[i] (1..4), or 0 if it is invalid; *consumed is the
// length of the maximal invalid subpart when invalid (what one U+FFFD replaces).
size_t utf8_sequence(std::string_view s, size_t i, size_t* consumed) {
  unsigned char b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *consumed = 1;
    return 0;
  }
  size_t j = i + 1, k = 0;
  while (k < need && j < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[j]);
    bool ok = k == 0 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) break;
    ++j;
    ++k;
  }
  if (k == need) return need + 1;
  *consumed = j - i;
  return 0;
}

// Decodes the code point at s[i] of valid UTF-8; *len gets its length.
int32_t decode_utf8(std::string_view s, size_t i, size_t* len) {
  utf8proc_int32_t cp = -1;
  utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                        static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  *len = n > 0 ? static_cast<size_t>(n) : 1;
  return cp;
}

// Start of the code point that ends just before s[end] (valid UTF-8).
size_t previous_char_start(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

void append_utf8(std::string& out, int32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s match).
bool is_unicode_whitespace(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// Rust regex's Unicode \w: letters, marks, decimal digits, connector punctuation, joiners.
bool is_word_char(int32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC: return true;
    default: return false;
  }
}

}  // namespace

bool is_valid_utf8(std::string_view s, size_t* bad_offset) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    size_t consumed = 0;
    size_t len = utf8_sequence(s, i, &consumed);
    if (len == 0) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t consumed = 0;
    size_t len = utf8_sequence(bytes, i, &consumed);
    if (len > 0) {
      out.append(bytes.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      i += consumed;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pieces of the pipeline

namespace {

// GPT-2's byte <-> printable-character table (bytes_to_unicode in openai/gpt-2 encoder.py).
struct ByteLevelTable {
  std::array<std::string, 256> byte_to_char;  // UTF-8 of the character standing for each byte
  std::unordered_map<int32_t, uint8_t> char_to_byte;
  ByteLevelTable() {
    std::array<int32_t, 256> cp{};
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[static_cast<size_t>(b)] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[static_cast<size_t>(b)] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[static_cast<size_t>(b)] = true;
    int32_t n = 0;
    for (int b = 0; b < 256; ++b)
      cp[static_cast<size_t>(b)] = direct[static_cast<size_t>(b)] ? b : 256 + n++;
    for (int b = 0; b < 256; ++b) {
      append_utf8(byte_to_char[static_cast<size_t>(b)], cp[static_cast<size_t>(b)]);
      char_to_byte[cp[static_cast<size_t>(b)]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevelTable& byte_level() {
  static const ByteLevelTable table;
  return table;
}

// Unicode normalisation forms through utf8proc (text is valid UTF-8).
enum class NormForm { NFC, NFD, NFKC, NFKD };

std::string normalize_form(std::string_view text, NormForm form) {
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormForm::NFC: options |= UTF8PROC_COMPOSE; break;
    case NormForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
    case NormForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                    static_cast<utf8proc_ssize_t>(text.size()), &out,
                                    static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    fail(ErrorKind::InvalidArgument, "text cannot be normalised: {}", utf8proc_errmsg(n));
  }
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

// HF patterns are Oniguruma regexes whose \s is Unicode White_Space; PCRE2's UCP \s adds U+180E.
// Spelling \s out keeps the two engines in step.
constexpr const char* kWhitespaceClassBody =
    "\\t\\n\\x0B\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string spell_out_whitespace(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (!in_class) out += '[';
        out += kWhitespaceClassBody;
        if (!in_class) out += ']';
      } else if (e == 'S' && !in_class) {
        out += "[^";
        out += kWhitespaceClassBody;
        out += ']';
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      size_t end = pattern.find(":]", i + 2);  // POSIX class [:alpha:]
      if (end != std::string::npos) {
        out.append(pattern, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

// A compiled PCRE2 pattern (UTF + UCP, JIT when available).
class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const std::string& where) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    uint32_t options = PCRE2_UTF | PCRE2_UCP;
    if (literal) options |= PCRE2_LITERAL;
    std::string source = literal ? pattern : spell_out_whitespace(pattern);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &err,
                          &err_offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      fail(ErrorKind::Unsupported, "{}: regex '{}' does not compile at offset {}: {}", where,
           pattern, err_offset, reinterpret_cast<const char*>(msg));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code_); }

  // Calls piece(begin, end) for every match and every gap between matches, in order, skipping
  // empty pieces (HF's Split with behaviour Isolated). `text` is valid UTF-8.
  template <typename F>
  void split_isolated(std::string_view text, pcre2_match_data* md, pcre2_match_context* mc,
                      F&& piece) const {
    size_t prev = 0, pos = 0;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    while (pos <= text.size()) {
      int rc = jit_ ? pcre2_jit_match(code_, subject, text.size(), pos, 0, md, mc)
                    : pcre2_match(code_, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, mc);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        fail(ErrorKind::Internal, "pre-tokenizer regex failed: {}",
             reinterpret_cast<const char*>(msg));
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t start = ov[0], end = ov[1];
      if (start > prev) piece(prev, start);
      if (end > start) {
        piece(start, end);
        pos = end;
      } else {  // empty match: step one character, as Oniguruma's iterator does
        if (start >= text.size()) break;
        size_t len = 1;
        decode_utf8(text, start, &len);
        pos = start + len;
      }
      prev = std::max(prev, end);
    }
    if (prev < text.size()) piece(prev, text.size());
  }
  pcre2_code* code() const { return code_; }

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

// PCRE2 scratch of one thread: match data for each regex and a JIT stack big enough for long
// inputs.
struct RegexScratch {
  std::vector<pcre2_match_data*> match_data;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_context* context = nullptr;
  explicit RegexScratch(const std::vector<const Regex*>& regexes) {
    for (const Regex* r : regexes)
      match_data.push_back(pcre2_match_data_create_from_pattern(r->code(), nullptr));
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  RegexScratch(const RegexScratch&) = delete;
  RegexScratch& operator=(const RegexScratch&) = delete;
  ~RegexScratch() {
    for (auto* md : match_data) pcre2_match_data_free(md);
    pcre2_match_context_free(context);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
  }
};

// Byte trie over added-token contents; finds the leftmost-longest match like HF's Aho-Corasick.
class TokenTrie {
 public:
  void add(std::string_view s, int32_t token_index) {
    if (s.empty()) return;
    int32_t node = 0;
    first_byte_[static_cast<unsigned char>(s[0])] = true;
    for (char ch : s) {
      auto b = static_cast<unsigned char>(ch);
      int32_t next = child(node, b);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        auto& kids = nodes_[static_cast<size_t>(node)].children;
        kids.insert(std::lower_bound(kids.begin(), kids.end(), std::pair<uint8_t, int32_t>(b, -1)),
                    {b, next});
      }
      node = next;
    }
    auto& term = nodes_[static_cast<size_t>(node)].token;
    if (term < 0) term = token_index;  // the first token with this content wins
  }
  bool empty() const { return nodes_.size() == 1; }
  // Leftmost match at or after `from`: returns true with [*start, *end) and the token index.
  bool find(std::string_view text, size_t from, size_t* start, size_t* end, int32_t* token) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
      int32_t node = 0, best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        node = child(node, static_cast<unsigned char>(text[j]));
        if (node < 0) break;
        if (nodes_[static_cast<size_t>(node)].token >= 0) {
          best = nodes_[static_cast<size_t>(node)].token;
          best_end = j + 1;
        }
      }
      if (best >= 0) {
        *start = i;
        *end = best_end;
        *token = best;
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t token = -1;
  };
  int32_t child(int32_t node, uint8_t b) const {
    const auto& kids = nodes_[static_cast<size_t>(node)].children;
    for (const auto& [byte, next] : kids) {
      if (byte == b) return next;
      if (byte > b) break;
    }
    return -1;
  }
  std::vector<Node> nodes_ = std::vector<Node>(1);
  std::array<bool, 256> first_byte_{};
};

// Open-addressing map (left id, right id) -> (rank, merged id); the BPE inner loop's only lookup.
class MergeTable {
 public:
  struct Merge {
    int32_t rank, id;
  };
  void build(const std::vector<std::pair<uint64_t, Merge>>& merges) {
    size_t cap = 16;
    while (cap < merges.size() * 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, Merge{-1, -1});
    mask_ = cap - 1;
    for (const auto& [key, merge] : merges) {
      size_t i = hash(key) & mask_;
      while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
      keys_[i] = key;
      values_[i] = merge;  // a repeated pair keeps its last rank, as HF's HashMap collect does
    }
  }
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const Merge* find(int32_t a, int32_t b) const {
    uint64_t k = key(a, b);
    for (size_t i = hash(k) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == k) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<uint64_t> keys_;
  std::vector<Merge> values_;
  size_t mask_ = 0;
};

// Word -> ids cache, one per thread (no locks on the hot path). Open addressing over a byte arena
// that holds each key followed by its ids, so a hit costs two cache lines. Bounded like HF's cache:
// when full it stops growing and later words are computed each time.
class WordCache {
 public:
  bool lookup(std::string_view word, uint64_t h, std::vector<int32_t>& out) const {
    if (slots_.empty()) return false;
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return false;
      if (s.hash == h && s.key_len == word.size() &&
          std::memcmp(arena_.data() + s.offset, word.data(), word.size()) == 0) {
        const char* p = arena_.data() + s.offset + ids_offset(s.key_len);
        size_t first = out.size();
        out.resize(first + s.n_ids);
        std::memcpy(out.data() + first, p, s.n_ids * sizeof(int32_t));
        return true;
      }
    }
  }
  void insert(std::string_view word, uint64_t h, std::span<const int32_t> ids) {
    if (word.size() > kMaxWordBytes || ids.size() > 0xFFFF || size_ >= kMaxEntries) return;
    if ((size_ + 1) * 2 > slots_.size()) grow();
    Slot s{h, static_cast<uint32_t>(arena_.size()), static_cast<uint16_t>(word.size()),
           static_cast<uint16_t>(ids.size())};
    arena_.append(word);
    arena_.resize(s.offset + ids_offset(s.key_len) + ids.size() * sizeof(int32_t));
    std::memcpy(arena_.data() + s.offset + ids_offset(s.key_len), ids.data(),
                ids.size() * sizeof(int32_t));
    place(s);
    ++size_;
  }
  void clear() {
    slots_.clear();
    arena_.clear();
    size_ = 0;
    mask_ = 0;
  }
  // 64-bit hash of a short byte string, never 0 (0 marks an empty slot).
  static uint64_t hash(std::string_view w) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ w.size();
    size_t i = 0;
    for (; i + 8 <= w.size(); i += 8) {
      uint64_t x;
      std::memcpy(&x, w.data() + i, 8);
      h = (h ^ x) * 0xff51afd7ed558ccdull;
      h ^= h >> 32;
    }
    uint64_t tail = 0;
    std::memcpy(&tail, w.data() + i, w.size() - i);
    h = (h ^ tail) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h | 1;
  }

 private:
  struct Slot {
    uint64_t hash;
    uint32_t offset;
    uint16_t key_len, n_ids;
  };
  static constexpr size_t kMaxWordBytes = 256;
  static constexpr size_t kMaxEntries = 1 << 18;
  static size_t ids_offset(size_t key_len) { return (key_len + 3) & ~size_t{3}; }
  void place(const Slot& s) {
    size_t i = s.hash & mask_;
    while (slots_[i].hash != 0) i = (i + 1) & mask_;
    slots_[i] = s;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(1024, old.size() * 2), Slot{0, 0, 0, 0});
    mask_ = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.hash != 0) place(s);
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t size_ = 0, mask_ = 0;
};

// What each thread keeps for the tokenizer it last used: its word cache and PCRE2 scratch (a
// thread that switches tokenizers starts afresh; tokenizers are told apart by a serial number).
struct ThreadState {
  uint64_t owner = 0;
  WordCache cache;
  std::unique_ptr<RegexScratch> scratch;
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

std::atomic<uint64_t> g_tokenizer_serial{0};

struct SplitStage {
  std::unique_ptr<Regex> regex;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// The tokenizer

struct Tokenizer::Impl {
  std::string name;
  // model
  std::unordered_map<std::string, int32_t> vocab;  // byte-level token string -> id
  std::vector<std::string> id_token;               // id -> token string ("" for holes)
  std::vector<std::string> id_bytes;               // id -> bytes it decodes to
  std::vector<bool> id_present;
  MergeTable merges;
  std::array<int32_t, 256> byte_id{};  // id of each byte's byte-level character, -1 if absent
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;
  // normalizer
  std::vector<NormForm> norms;
  // pre-tokenizer
  std::vector<SplitStage> splits;
  bool add_prefix_space = false;
  std::unique_ptr<Regex> byte_level_regex;  // null when use_regex is false
  // added tokens
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  TokenTrie raw_trie, normalized_trie;
  uint64_t serial = ++g_tokenizer_serial;  // names this tokenizer's per-thread state

  ThreadState& local() const {
    ThreadState& s = thread_state();
    if (s.owner != serial) {
      s.cache.clear();
      s.scratch = std::make_unique<RegexScratch>(regexes());
      s.owner = serial;
    }
    return s;
  }

  std::vector<const Regex*> regexes() const {
    std::vector<const Regex*> r;
    for (const auto& s : splits) r.push_back(s.regex.get());
    if (byte_level_regex) r.push_back(byte_level_regex.get());
    return r;
  }

  // An ASCII character never combines with what precedes it and is left alone by every form, so
  // the text splits before each one into pieces normalised apart: only the non-ASCII runs, each
  // with the ASCII character before it (a possible base of a combining mark), go to utf8proc.
  std::string normalize(std::string_view text) const {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      size_t j = i;
      while (j < text.size() && static_cast<unsigned char>(text[j]) < 0x80) ++j;
      if (j == text.size()) {
        out.append(text.substr(i));
        break;
      }
      size_t start = j > i ? j - 1 : j;
      size_t end = j;
      while (end < text.size() && static_cast<unsigned char>(text[end]) >= 0x80) ++end;
      out.append(text.substr(i, start - i));
      std::string piece(text.substr(start, end - start));
      for (NormForm f : norms) piece = normalize_form(piece, f);
      out += piece;
      i = end;
    }
    return out;
  }

  // BPE of one pre-token (raw bytes); appends ids.
  void bpe_word(std::string_view word, std::vector<int32_t>& ids) const {
    if (word.empty()) return;
    WordCache& cache = local().cache;
    uint64_t h = WordCache::hash(word);
    if (cache.lookup(word, h, ids)) return;
    size_t first = ids.size();
    bpe_uncached(word, ids);
    cache.insert(word, h, std::span<const int32_t>(ids.data() + first, ids.size() - first));
  }

  void bpe_uncached(std::string_view word, std::vector<int32_t>& ids) const {
    if (ignore_merges) {
      std::string mapped;
      for (char c : word) mapped += byte_level().byte_to_char[static_cast<unsigned char>(c)];
      auto it = vocab.find(mapped);
      if (it != vocab.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    // Symbols in a doubly linked list; merges popped by (rank, position) as HF's Word::merge_all.
    struct Symbol {
      int32_t id, prev, next;
      bool alive;
    };
    std::vector<Symbol> sym;
    sym.reserve(word.size());
    for (char c : word) {
      int32_t id = byte_id[static_cast<unsigned char>(c)];
      if (id < 0) {
        if (unk_id < 0) continue;  // no unk token: HF drops the character
        if (fuse_unk && !sym.empty() && sym.back().id == unk_id) continue;
        id = unk_id;
      }
      int32_t n = static_cast<int32_t>(sym.size());
      sym.push_back({id, n - 1, n + 1, true});
    }
    if (sym.empty()) return;
    sym.back().next = -1;
    struct Candidate {
      int32_t rank, pos, left, right;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    auto consider = [&](int32_t pos) {
      if (pos < 0) return;
      int32_t next = sym[static_cast<size_t>(pos)].next;
      if (next < 0) return;
      const auto* m =
          merges.find(sym[static_cast<size_t>(pos)].id, sym[static_cast<size_t>(next)].id);
      if (m)
        queue.push(
            {m->rank, pos, sym[static_cast<size_t>(pos)].id, sym[static_cast<size_t>(next)].id});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) consider(i);
    while (!queue.empty()) {
      Candidate c = queue.top();
      queue.pop();
      Symbol& left = sym[static_cast<size_t>(c.pos)];
      if (!left.alive || left.next < 0 || left.id != c.left) continue;
      Symbol& right = sym[static_cast<size_t>(left.next)];
      if (right.id != c.right) continue;  // stale: a neighbour changed since this was queued
      left.id = merges.find(c.left, c.right)->id;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = c.pos;
      consider(left.prev);
      consider(c.pos);
    }
    for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next)
      ids.push_back(sym[static_cast<size_t>(i)].id);
  }

  // Pre-tokenizer + model on one stretch of normalised text without added tokens.
  void encode_segment(std::string_view seg, RegexScratch& scratch,
                      std::vector<int32_t>& ids) const {
    if (seg.empty()) return;
    std::string prefixed;
    if (add_prefix_space && seg[0] != ' ') {
      prefixed.reserve(seg.size() + 1);
      prefixed += ' ';
      prefixed += seg;
      seg = prefixed;
    }
    split_stage(seg, 0, scratch, ids);
  }

  void split_stage(std::string_view text, size_t stage, RegexScratch& scratch,
                   std::vector<int32_t>& ids) const {
    if (stage < splits.size()) {
      splits[stage].regex->split_isolated(
          text, scratch.match_data[stage], scratch.context,
          [&](size_t b, size_t e) { split_stage(text.substr(b, e - b), stage + 1, scratch, ids); });
      return;
    }
    if (byte_level_regex) {
      byte_level_regex->split_isolated(
          text, scratch.match_data[stage], scratch.context,
          [&](size_t b, size_t e) { bpe_word(text.substr(b, e - b), ids); });
    } else {
      bpe_word(text, ids);
    }
  }

  // Splits `text` on the added tokens of `trie` (HF AddedVocabulary::find_matches): tokens go to
  // ids, the stretches between them to `rest`.
  template <typename F>
  void split_added(std::string_view text, const TokenTrie& trie, std::vector<int32_t>& ids,
                   F&& rest) const {
    if (trie.empty()) {
      rest(text);
      return;
    }
    size_t start_offset = 0, from = 0, start = 0, stop = 0;
    int32_t index = -1;
    while (from < text.size() && trie.find(text, from, &start, &stop, &index)) {
      const AddedToken& tok = added[static_cast<size_t>(index)];
      from = stop;
      if (start < start_offset) continue;  // swallowed by the previous token's rstrip
      if (tok.single_word) {
        size_t len = 0;
        bool start_ok =
            start == 0 || !is_word_char(decode_utf8(text, previous_char_start(text, start), &len));
        bool stop_ok = stop == text.size() || !is_word_char(decode_utf8(text, stop, &len));
        if (!start_ok || !stop_ok) continue;
      }
      if (tok.lstrip) {
        size_t s = start;
        while (s > start_offset) {
          size_t p = previous_char_start(text, s), len = 0;
          if (!is_unicode_whitespace(decode_utf8(text, p, &len))) break;
          s = p;
        }
        start = s;
      }
      if (tok.rstrip) {
        while (stop < text.size()) {
          size_t len = 0;
          if (!is_unicode_whitespace(decode_utf8(text, stop, &len))) break;
          stop += len;
        }
        from = stop;
      }
      if (start > start_offset) rest(text.substr(start_offset, start - start_offset));
      ids.push_back(tok.id);
      start_offset = stop;
    }
    if (start_offset < text.size()) rest(text.substr(start_offset));
  }

  void encode(std::string_view text, std::vector<int32_t>& ids) const {
    size_t bad = 0;
    if (!is_valid_utf8(text, &bad)) {
      fail(ErrorKind::InvalidArgument, "text is not valid UTF-8 (byte {} of {})", bad, text.size());
    }
    RegexScratch& scratch = *local().scratch;
    split_added(text, raw_trie, ids, [&](std::string_view piece) {
      if (norms.empty()) {
        split_added(piece, normalized_trie, ids,
                    [&](std::string_view seg) { encode_segment(seg, scratch, ids); });
      } else {
        std::string normalized = normalize(piece);
        split_added(normalized, normalized_trie, ids,
                    [&](std::string_view seg) { encode_segment(seg, scratch, ids); });
      }
    });
  }
};

// ---------------------------------------------------------------------------------------------
// Loading

namespace {

const json& field(const json& obj, const char* key, const char* where) {
  auto it = obj.find(key);
  if (it == obj.end()) fail(ErrorKind::Format, "{}: missing field '{}'", where, key);
  return *it;
}

bool opt_bool(const json& obj, const char* key, bool fallback, const char* where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    fail(ErrorKind::Format, "{}: field '{}' must be true or false", where, key);
  return it->get<bool>();
}

std::string type_of(const json& obj, const char* where) {
  if (!obj.is_object()) fail(ErrorKind::Format, "{}: expected an object", where);
  const json& t = field(obj, "type", where);
  if (!t.is_string()) fail(ErrorKind::Format, "{}: field 'type' must be a string", where);
  return t.get<std::string>();
}

void load_normalizer(const json& n, std::vector<NormForm>& out) {
  if (n.is_null()) return;
  std::string type = type_of(n, "normalizer");
  if (type == "NFC")
    out.push_back(NormForm::NFC);
  else if (type == "NFD")
    out.push_back(NormForm::NFD);
  else if (type == "NFKC")
    out.push_back(NormForm::NFKC);
  else if (type == "NFKD")
    out.push_back(NormForm::NFKD);
  else if (type == "Sequence") {
    const json& list = field(n, "normalizers", "normalizer");
    if (!list.is_array()) fail(ErrorKind::Format, "normalizer: 'normalizers' must be an array");
    for (const json& item : list) load_normalizer(item, out);
  } else {
    fail(ErrorKind::Unsupported,
         "normalizer type '{}' is not supported (NFC, NFD, NFKC, NFKD, Sequence are)", type);
  }
}

void load_byte_level_pretokenizer(const json& p, Tokenizer::Impl& impl) {
  impl.add_prefix_space = opt_bool(p, "add_prefix_space", false, "pre_tokenizer");
  if (opt_bool(p, "use_regex", true, "pre_tokenizer")) {
    // GPT-2's pattern, exactly as HF's ByteLevel pre-tokenizer has it.
    impl.byte_level_regex = std::make_unique<Regex>(
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", false,
        "pre_tokenizer ByteLevel");
  }
}

void load_pretokenizer(const json& p, Tokenizer::Impl& impl) {
  if (p.is_null())
    fail(ErrorKind::Unsupported,
         "pre_tokenizer is null: only byte-level BPE tokenizers are supported");
  std::string type = type_of(p, "pre_tokenizer");
  if (type == "ByteLevel") {
    load_byte_level_pretokenizer(p, impl);
    return;
  }
  if (type != "Sequence") {
    fail(ErrorKind::Unsupported,
         "pre_tokenizer type '{}' is not supported (ByteLevel, or a Sequence of Split then "
         "ByteLevel, is)",
         type);
  }
  const json& list = field(p, "pretokenizers", "pre_tokenizer");
  if (!list.is_array() || list.empty())
    fail(ErrorKind::Format, "pre_tokenizer: 'pretokenizers' must be a non-empty array");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = fmt::format("pre_tokenizer {}", i);
    std::string t = type_of(list[i], where.c_str());
    bool last = i + 1 == list.size();
    if (t == "ByteLevel" && last) {
      load_byte_level_pretokenizer(list[i], impl);
    } else if (t == "Split" && !last) {
      const json& pattern = field(list[i], "pattern", where.c_str());
      std::string behavior = field(list[i], "behavior", where.c_str()).get<std::string>();
      if (behavior != "Isolated" || opt_bool(list[i], "invert", false, where.c_str())) {
        fail(ErrorKind::Unsupported,
             "{}: Split with behavior '{}' (or invert) is not supported (Isolated is)", where,
             behavior);
      }
      if (pattern.contains("Regex")) {
        impl.splits.push_back(
            {std::make_unique<Regex>(pattern["Regex"].get<std::string>(), false, where)});
      } else if (pattern.contains("String")) {
        impl.splits.push_back(
            {std::make_unique<Regex>(pattern["String"].get<std::string>(), true, where)});
      } else {
        fail(ErrorKind::Format, "{}: pattern must have 'Regex' or 'String'", where);
      }
    } else {
      fail(ErrorKind::Unsupported,
           "{}: '{}' is not supported here (a Sequence must be Split... then ByteLevel)", where, t);
    }
  }
  if (impl.splits.size() + 1 != list.size())
    fail(ErrorKind::Unsupported, "pre_tokenizer: a Sequence must end with ByteLevel");
}

void check_id(int64_t id, const std::string& what) {
  if (id < 0 || id >= (int64_t{1} << 31) - 1)
    fail(ErrorKind::Format, "{}: id {} out of range", what, id);
}

std::unique_ptr<Tokenizer::Impl> build(const json& root) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  if (!root.is_object()) fail(ErrorKind::Format, "top level is not a JSON object");

  // Model: BPE vocabulary and merges.
  const json& model = field(root, "model", "tokenizer");
  if (!model.is_object()) fail(ErrorKind::Format, "model: expected an object");
  if (model.contains("type") && model["type"] != "BPE") {
    fail(ErrorKind::Unsupported, "model type '{}' is not supported (BPE is)", model["type"].dump());
  }
  const json& vocab = field(model, "vocab", "model");
  if (!vocab.is_object()) fail(ErrorKind::Format, "model.vocab: expected an object of token -> id");
  int64_t size = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer())
      fail(ErrorKind::Format, "model.vocab: token '{}' has a non-integer id", it.key());
    int64_t id = it.value().get<int64_t>();
    check_id(id, fmt::format("model.vocab: token '{}'", it.key()));
    impl->vocab.emplace(it.key(), static_cast<int32_t>(id));
    size = std::max(size, id + 1);
  }
  const json& added = root.contains("added_tokens") ? root["added_tokens"] : json::array();
  if (!added.is_null() && !added.is_array())
    fail(ErrorKind::Format, "added_tokens: expected an array");
  for (size_t i = 0; i < added.size(); ++i) {
    std::string where = fmt::format("added_tokens[{}]", i);
    const json& a = added[i];
    if (!a.is_object()) fail(ErrorKind::Format, "{}: expected an object", where);
    AddedToken t;
    const json& id = field(a, "id", where.c_str());
    const json& content = field(a, "content", where.c_str());
    if (!id.is_number_integer()) fail(ErrorKind::Format, "{}: 'id' must be an integer", where);
    if (!content.is_string()) fail(ErrorKind::Format, "{}: 'content' must be a string", where);
    check_id(id.get<int64_t>(), where);
    t.id = static_cast<int32_t>(id.get<int64_t>());
    t.content = content.get<std::string>();
    t.special = opt_bool(a, "special", false, where.c_str());
    t.normalized = opt_bool(a, "normalized", !t.special, where.c_str());
    t.lstrip = opt_bool(a, "lstrip", false, where.c_str());
    t.rstrip = opt_bool(a, "rstrip", false, where.c_str());
    t.single_word = opt_bool(a, "single_word", false, where.c_str());
    if (!is_valid_utf8(t.content)) fail(ErrorKind::Format, "{}: content is not valid UTF-8", where);
    if (t.content.empty()) continue;  // HF ignores empty added tokens
    size = std::max<int64_t>(size, t.id + 1);
    impl->added.push_back(std::move(t));
  }

  impl->id_token.assign(static_cast<size_t>(size), std::string());
  impl->id_present.assign(static_cast<size_t>(size), false);
  for (const auto& [tok, id] : impl->vocab) {
    if (impl->id_present[static_cast<size_t>(id)]) {
      fail(ErrorKind::Format, "model.vocab: id {} is given to both '{}' and '{}'", id,
           impl->id_token[static_cast<size_t>(id)], tok);
    }
    impl->id_token[static_cast<size_t>(id)] = tok;
    impl->id_present[static_cast<size_t>(id)] = true;
  }
  for (const auto& t : impl->added) {  // added tokens take precedence for their ids
    impl->id_token[static_cast<size_t>(t.id)] = t.content;
    impl->id_present[static_cast<size_t>(t.id)] = true;
  }

  const ByteLevelTable& bl = byte_level();
  for (size_t b = 0; b < 256; ++b) {
    auto it = impl->vocab.find(bl.byte_to_char[b]);
    impl->byte_id[b] = it == impl->vocab.end() ? -1 : it->second;
  }

  // Options of the BPE model that change ids and that byte-level BPE does not use.
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      model["dropout"].get<double>() != 0.0) {
    fail(ErrorKind::Unsupported,
         "model.dropout is set: BPE dropout is not supported (encoding must be deterministic)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && model[key] != "") {
      fail(ErrorKind::Unsupported, "model.{} is not supported", key);
    }
  }
  if (opt_bool(model, "byte_fallback", false, "model")) {
    fail(ErrorKind::Unsupported, "model.byte_fallback is not supported");
  }
  impl->ignore_merges = opt_bool(model, "ignore_merges", false, "model");
  impl->fuse_unk = opt_bool(model, "fuse_unk", false, "model");
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    auto it = impl->vocab.find(model["unk_token"].get<std::string>());
    if (it == impl->vocab.end())
      fail(ErrorKind::Format, "model.unk_token '{}' is not in the vocabulary",
           model["unk_token"].get<std::string>());
    impl->unk_id = it->second;
  }

  const json& merges = field(model, "merges", "model");
  if (!merges.is_array()) fail(ErrorKind::Format, "model.merges: expected an array");
  std::vector<std::pair<uint64_t, MergeTable::Merge>> table;
  table.reserve(merges.size());
  std::string a, b;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        fail(ErrorKind::Format, "model.merges[{}]: '{}' is not two tokens separated by one space",
             rank, s);
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(ErrorKind::Format, "model.merges[{}]: expected \"a b\" or [\"a\", \"b\"]", rank);
    }
    auto ia = impl->vocab.find(a), ib = impl->vocab.find(b), iab = impl->vocab.find(a + b);
    if (ia == impl->vocab.end() || ib == impl->vocab.end() || iab == impl->vocab.end()) {
      const std::string& missing = ia == impl->vocab.end()   ? a
                                   : ib == impl->vocab.end() ? b
                                                             : a + b;
      fail(ErrorKind::Format, "model.merges[{}]: token '{}' is not in the vocabulary", rank,
           missing);
    }
    table.push_back({MergeTable::key(ia->second, ib->second),
                     MergeTable::Merge{static_cast<int32_t>(rank), iab->second}});
  }
  impl->merges.build(table);

  load_normalizer(root.contains("normalizer") ? root["normalizer"] : json(), impl->norms);
  load_pretokenizer(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json(), *impl);
  const json& decoder = root.contains("decoder") ? root["decoder"] : json();
  if (decoder.is_null() || type_of(decoder, "decoder") != "ByteLevel") {
    fail(ErrorKind::Unsupported, "decoder must be ByteLevel (got {})", decoder.dump());
  }

  // Added tokens: the raw ones match before normalisation, the normalised ones after, on their
  // normalised content. Special tokens come first, as in HF's refresh_added_tokens.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < impl->added.size(); ++i) {
      const AddedToken& t = impl->added[i];
      if (t.special != (pass == 0)) continue;
      if (t.normalized)
        impl->normalized_trie.add(impl->normalize(t.content), static_cast<int32_t>(i));
      else
        impl->raw_trie.add(t.content, static_cast<int32_t>(i));
      impl->added_by_content.emplace(t.content, t.id);
    }
  }

  // What each id decodes to: HF's ByteLevel decoder maps a token's characters back to bytes when
  // every one of them is a byte-level character, and keeps the token's own UTF-8 otherwise.
  impl->id_bytes.assign(static_cast<size_t>(size), std::string());
  for (size_t id = 0; id < static_cast<size_t>(size); ++id) {
    const std::string& tok = impl->id_token[id];
    std::string bytes;
    bool all_mapped = true;
    for (size_t i = 0; i < tok.size();) {
      size_t len = 1;
      int32_t cp = decode_utf8(tok, i, &len);
      auto it = bl.char_to_byte.find(cp);
      if (it == bl.char_to_byte.end()) {
        all_mapped = false;
        break;
      }
      bytes += static_cast<char>(it->second);
      i += len;
    }
    impl->id_bytes[id] = all_mapped ? bytes : tok;
  }
  return impl;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json_text(std::string_view json_text, const std::string& name) {
  return with_context(name, [&] {
    json root;
    try {
      root = json::parse(json_text);
    } catch (const json::parse_error& e) {
      fail(ErrorKind::Format, "not valid JSON, truncated or corrupt ({} bytes): {}",
           json_text.size(), e.what());
    }
    std::unique_ptr<Impl> impl;
    try {
      impl = build(root);
    } catch (const json::exception& e) {  // a field of the wrong JSON type
      fail(ErrorKind::Format, "malformed tokenizer.json: {}", e.what());
    }
    impl->name = name;
    return Tokenizer(std::move(impl));
  });
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail(ErrorKind::Io, "{}: is a directory, not a tokenizer.json", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::Io, "{}: cannot open tokenizer file: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(ErrorKind::Io, "{}: read error", path);
  return from_json_text(ss.str(), path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  impl_->encode(text, ids);
  return ids;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& ids) const {
  impl_->encode(text, ids);
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    if (id < 0 || id >= vocab_size() || !impl_->id_present[static_cast<size_t>(id)]) {
      fail(ErrorKind::InvalidArgument,
           "{}: cannot decode id {} (position {}): the vocabulary has ids 0..{}", impl_->name, id,
           i, vocab_size() - 1);
    }
    bytes += impl_->id_bytes[static_cast<size_t>(id)];
  }
  return utf8_lossy(bytes);
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_token.size()); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  std::string key(token);
  if (auto it = impl_->added_by_content.find(key); it != impl_->added_by_content.end())
    return it->second;
  if (auto it = impl_->vocab.find(key); it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    fail(ErrorKind::InvalidArgument, "{}: id {} out of range 0..{}", impl_->name, id,
         vocab_size() - 1);
  }
  return impl_->id_token[static_cast<size_t>(id)];
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

std::optional<int32_t> Tokenizer::eod_id() const { return token_to_id("<|endoftext|>"); }

const std::string& Tokenizer::name() const { return impl_->name; }

}  // namespace hlm
