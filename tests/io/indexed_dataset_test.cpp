// io/indexed_dataset: the writer produces Megatron's exact .bin/.idx bytes and renames only on
// success, the reader round-trips every dtype we write, and truncated or corrupt files fail with
// one clear error naming the file instead of crashing.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/error.h"
#include "io/indexed_dataset.h"

namespace hlm {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "hlm_idx_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string prefix(const std::string& name) const { return (path / name).string(); }
};

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Three documents: [5 6 7], then one of two sequences [8] [9 10], then an empty one.
void write_sample(const std::string& prefix, TokenDType dtype) {
  IndexedDatasetWriter w(prefix, dtype);
  w.add_document(std::vector<int32_t>{5, 6, 7});
  w.add_sequence(std::vector<int32_t>{8});
  w.add_sequence(std::vector<int32_t>{9, 10});
  w.end_document();
  w.add_document(std::vector<int32_t>{});
  w.finish();
}

TEST(IndexedDataset, WritesMegatronBytes) {
  TempDir dir;
  std::string prefix = dir.prefix("d");
  write_sample(prefix, TokenDType::U16);
  std::string want;
  want.append("MMIDIDX\0\0", 9);
  put<uint64_t>(want, 1);
  put<uint8_t>(want, 8);   // uint16
  put<uint64_t>(want, 4);  // sequences
  put<uint64_t>(want, 4);  // document index entries = documents + 1
  for (int32_t len : {3, 1, 2, 0}) put(want, len);
  for (int64_t ptr : {0, 6, 8, 12}) put(want, ptr);
  for (int64_t d : {0, 1, 3, 4}) put(want, d);
  EXPECT_EQ(slurp(prefix + ".idx"), want);
  std::string bin;
  for (uint16_t t : {5, 6, 7, 8, 9, 10}) put(bin, t);
  EXPECT_EQ(slurp(prefix + ".bin"), bin);
  EXPECT_FALSE(fs::exists(prefix + ".bin.tmp"));
  EXPECT_FALSE(fs::exists(prefix + ".idx.tmp"));
}

TEST(IndexedDataset, ReadsBackWhatWasWritten) {
  TempDir dir;
  for (TokenDType dt : {TokenDType::U16, TokenDType::I32, TokenDType::U8, TokenDType::I64}) {
    std::string prefix = dir.prefix(token_dtype_name(dt));
    write_sample(prefix, dt);
    IndexedDataset ds(prefix);
    EXPECT_EQ(ds.dtype(), dt);
    EXPECT_EQ(ds.num_sequences(), 4);
    EXPECT_EQ(ds.num_documents(), 3);
    EXPECT_EQ(ds.num_tokens(), 6);
    EXPECT_EQ(ds.sequence(0), (std::vector<int32_t>{5, 6, 7}));
    EXPECT_EQ(ds.document(1), (std::vector<int32_t>{8, 9, 10}));
    EXPECT_EQ(ds.document_length(2), 0);
    int32_t two[2];
    ds.read_document(1, 1, 2, two);
    EXPECT_EQ(two[0], 9);
    EXPECT_EQ(two[1], 10);
    EXPECT_THROW(ds.read_document(1, 2, 2, two), Error);
    EXPECT_THROW(ds.sequence(4), Error);
  }
}

TEST(IndexedDataset, DtypeFollowsVocabulary) {
  EXPECT_EQ(token_dtype_for_vocab(50277), TokenDType::U16);
  EXPECT_EQ(token_dtype_for_vocab(65536), TokenDType::U16);
  EXPECT_EQ(token_dtype_for_vocab(65537), TokenDType::I32);
  EXPECT_EQ(token_dtype_for_vocab(256000), TokenDType::I32);
  TempDir dir;
  {
    IndexedDatasetWriter w(dir.prefix("big"), TokenDType::I32);
    w.add_document(std::vector<int32_t>{100000, 255999});
    w.finish();
  }
  EXPECT_EQ(IndexedDataset(dir.prefix("big")).document(0), (std::vector<int32_t>{100000, 255999}));
  IndexedDatasetWriter w(dir.prefix("small"), TokenDType::U16);
  std::string msg = error_of([&] { w.add_document(std::vector<int32_t>{1, 70000}); });
  EXPECT_NE(msg.find("token id 70000 does not fit the dataset dtype uint16"), std::string::npos)
      << msg;
}

TEST(IndexedDataset, UnfinishedWriterLeavesNothing) {
  TempDir dir;
  std::string prefix = dir.prefix("gone");
  {
    IndexedDatasetWriter w(prefix, TokenDType::U16);
    w.add_document(std::vector<int32_t>{1, 2, 3});
    EXPECT_TRUE(fs::exists(w.bin_tmp_path()));
  }
  EXPECT_TRUE(fs::is_empty(dir.path));
  std::string msg =
      error_of([&] { IndexedDatasetWriter w(dir.prefix("no/such/dir/x"), TokenDType::U16); });
  EXPECT_NE(msg.find("cannot create"), std::string::npos) << msg;
}

TEST(IndexedDataset, CorruptFilesGiveOneClearError) {
  TempDir dir;
  std::string good = dir.prefix("good");
  write_sample(good, TokenDType::U16);
  const std::string idx = slurp(good + ".idx"), bin = slurp(good + ".bin");
  std::string bad = dir.prefix("bad");

  auto expect_bad = [&](const std::string& idx_bytes, const std::string& bin_bytes,
                        const std::string& needle) {
    spit(bad + ".idx", idx_bytes);
    spit(bad + ".bin", bin_bytes);
    std::string msg;
    try {
      IndexedDataset ds(bad);
      msg = "(opened)";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Format) << e.what();
      msg = e.what();
    }
    EXPECT_NE(msg.find(needle), std::string::npos) << "got: " << msg;
    EXPECT_NE(msg.find(bad), std::string::npos) << "file not named: " << msg;
  };
  // Every truncation of the index is caught.
  for (size_t n = 0; n < idx.size(); ++n) {
    spit(bad + ".idx", idx.substr(0, n));
    spit(bad + ".bin", bin);
    EXPECT_THROW(IndexedDataset ds(bad), Error) << "truncated to " << n;
  }
  expect_bad(idx.substr(0, 20), bin, "truncated: 20 bytes");
  expect_bad(idx.substr(0, idx.size() - 1), bin, "does not match its header");
  expect_bad(idx + "x", bin, "does not match its header");
  std::string m = idx;
  m[0] = 'X';
  expect_bad(m, bin, "bad magic");
  m = idx;
  m[9] = 2;
  expect_bad(m, bin, "unsupported version 2");
  m = idx;
  m[17] = 9;
  expect_bad(m, bin, "unknown dtype code 9");
  m = idx;
  uint64_t huge = uint64_t{1} << 62;
  std::memcpy(m.data() + 18, &huge, 8);  // absurd sequence count: no overflow, no huge allocation
  expect_bad(m, bin, "does not match its header");
  expect_bad(idx, bin.substr(0, bin.size() - 2), "lies outside");  // truncated .bin
  m = idx;
  int32_t neg = -1;
  std::memcpy(m.data() + 34 + 4, &neg, 4);
  expect_bad(m, bin, "negative length");
  m = idx;
  int64_t odd = 3;  // not a multiple of the 2-byte item
  std::memcpy(m.data() + 34 + 16 + 8, &odd, 8);
  expect_bad(m, bin, "lies outside");
  m = idx;
  int64_t back = 0;  // document index going backwards
  std::memcpy(m.data() + 34 + 48 + 16, &back, 8);
  expect_bad(m, bin, "document index");
  m = idx;
  int64_t short_end = 3;  // last entry must be the sequence count
  std::memcpy(m.data() + 34 + 48 + 24, &short_end, 8);
  expect_bad(m, bin, "document index ends at 3");

  std::string msg = error_of([&] { IndexedDataset ds(dir.prefix("missing")); });
  EXPECT_NE(msg.find("missing.idx: cannot open"), std::string::npos) << msg;
}

}  // namespace
}  // namespace hlm
