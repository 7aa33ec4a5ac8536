// io/safetensors + io/json + io/convert: files round-trip bit-exactly through the writer and the
// mmap reader, shards resolve through the index, and every malformed file or index fails with one
// hlm::Error that names the file and the problem (never a crash).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/convert.h"
#include "io/file.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace hlm {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "hlm-st-XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a raw header text and a data area.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

// Expects an hlm::Error whose message contains every fragment.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const auto& frag : fragments)
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << "message: " << e.what() << "\nmissing: " << frag;
  }
}

TEST(Safetensors, RoundTripsEveryDTypeBitExactly) {
  TempDir dir;
  std::vector<float> f32 = {1.5f, -2.25f, 3.0e-8f, std::numeric_limits<float>::infinity(), -0.0f, 7.0f};
  std::vector<double> f64 = {1.0 / 3.0, -1e300};
  std::vector<uint16_t> bf = {0x3f80, 0xc000, 0x7fc0};
  std::vector<int64_t> i64 = {-5, 1LL << 40};
  std::vector<int32_t> i32 = {7};
  std::vector<uint8_t> u8 = {1, 2, 3};
  std::vector<SafetensorsItem> items;
  items.emplace_back("a.f32", Tensor(f32.data(), DType::F32, Device::CPU, {2, 3}));
  items.emplace_back("b.f64", Tensor(f64.data(), DType::F64, Device::CPU, {2}));
  items.emplace_back("c.bf16", Tensor(bf.data(), DType::BF16, Device::CPU, {3}));
  items.emplace_back("d.i64", Tensor(i64.data(), DType::I64, Device::CPU, {2, 1}));
  items.emplace_back("e.scalar", Tensor(i32.data(), DType::I32, Device::CPU, Shape()));
  items.emplace_back("f.u8", Tensor(u8.data(), DType::U8, Device::CPU, {3}));
  items.emplace_back("g.empty", Tensor(f32.data(), DType::F32, Device::CPU, {0, 4}));
  write_safetensors(dir / "x.safetensors", items, {{"format", "pt"}, {"note", "hi"}});

  SafetensorsFile f(dir / "x.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hi");
  EXPECT_EQ(f.entries().size(), 7u);
  EXPECT_EQ(f.data_offset() % 8, 0u);
  // Largest elements first: every tensor is aligned to its element size.
  for (const auto& e : f.entries())
    EXPECT_EQ(e.begin % dtype_size(e.dtype), 0u) << e.name;
  Tensor a = f.tensor("a.f32");
  EXPECT_EQ(a.shape_str(), "[2,3]");
  EXPECT_EQ(std::memcmp(a.data, f32.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.tensor("b.f64").data, f64.data(), 16), 0);
  EXPECT_EQ(std::memcmp(f.tensor("c.bf16").data, bf.data(), 6), 0);
  EXPECT_EQ(std::memcmp(f.tensor("d.i64").data, i64.data(), 16), 0);
  Tensor s = f.tensor("e.scalar");
  EXPECT_EQ(s.ndim, 0);
  EXPECT_EQ(*s.ptr<int32_t>(), 7);
  EXPECT_EQ(f.tensor("g.empty").numel(), 0);
  EXPECT_EQ(f.tensor("f.u8").ptr<uint8_t>()[2], 3);
  expect_error([&] { f.tensor("nope"); }, {"x.safetensors", "no tensor named 'nope'"});
}

TEST(Safetensors, WriterConvertsAndHandlesRowViews) {
  TempDir dir;
  std::vector<float> m(4 * 5);
  for (size_t i = 0; i < m.size(); ++i) m[i] = 0.1f * static_cast<float>(i) - 1.0f;
  Tensor full(m.data(), DType::F32, Device::CPU, {4, 5});
  std::vector<SafetensorsItem> items;
  items.emplace_back("cols", full.slice(1, 1, 3));             // non-contiguous row view
  items.emplace_back("bf", full, DType::BF16);                 // converted on the way out
  items.emplace_back("f64", full, DType::F64);
  write_safetensors(dir / "v.safetensors", items);
  SafetensorsFile f(dir / "v.safetensors");
  EXPECT_TRUE(f.metadata().empty());
  Tensor cols = f.tensor("cols");
  EXPECT_EQ(cols.shape_str(), "[4,3]");
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(cols.ptr<float>()[r * 3 + c], m[static_cast<size_t>(r * 5 + c + 1)]);
  Tensor bf = f.tensor("bf");
  Tensor f64 = f.tensor("f64");
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_EQ(bf.ptr<uint16_t>()[i], f32_to_bf16_bits(m[i]));
    EXPECT_EQ(f64.ptr<double>()[i], static_cast<double>(m[i]));
  }
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  float x = 1;
  Tensor t(&x, DType::F32, Device::CPU, {1});
  std::vector<SafetensorsItem> dup = {{"a", t}, {"a", t}};
  expect_error([&] { write_safetensors(dir / "d.safetensors", dup); }, {"d.safetensors", "'a' given twice"});
  std::vector<SafetensorsItem> meta = {{"__metadata__", t}};
  expect_error([&] { write_safetensors(dir / "m.safetensors", meta); }, {"reserved"});
  std::vector<SafetensorsItem> conv = {{"a", t, DType::I32}};
  expect_error([&] { write_safetensors(dir / "c.safetensors", conv); }, {"cannot write F32 as I32"});
  EXPECT_FALSE(fs::exists(dir / "d.safetensors"));
  // A folder that does not exist: an I/O error naming the file, no temp file left.
  std::vector<SafetensorsItem> ok = {{"a", t}};
  expect_error([&] { write_safetensors(dir / "no/such/x.safetensors", ok); }, {"x.safetensors", "cannot create"});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 0);
}

TEST(Safetensors, ReadsUnpaddedFilesWithUnalignedData) {
  TempDir dir;
  // Header of odd length: the F32 data starts at an odd address. Views still work via memcpy.
  float v[2] = {3.5f, -1.0f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  write_bytes(dir / "u.safetensors",
              raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data));
  SafetensorsFile f(dir / "u.safetensors");
  float back[2];
  convert_elements(back, DType::F32, f.tensor("w").data, DType::F32, 2);
  EXPECT_EQ(back[0], 3.5f);
  EXPECT_EQ(back[1], -1.0f);
}

TEST(Safetensors, UnsupportedButValidDTypesOpenAndRefuseOnAccess) {
  TempDir dir;
  write_bytes(dir / "b.safetensors",
              raw_file(R"({"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},)"
                       R"("w":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}})",
                       std::string("\1\0\1\7", 4)));
  SafetensorsFile f(dir / "b.safetensors");
  EXPECT_FALSE(f.find("mask")->supported);
  EXPECT_EQ(f.tensor("w").ptr<uint8_t>()[0], 7);
  expect_error([&] { f.tensor("mask"); }, {"b.safetensors", "'mask'", "BOOL"});
}

struct BadCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> fragments;
};

TEST(Safetensors, EveryMalformedFileFailsWithOneClearError) {
  TempDir dir;
  const std::string four(4, '\0'), eight(8, '\0');
  std::string good = raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight);
  std::vector<BadCase> cases = {
      {"empty", "", {"0 bytes", "too short"}},
      {"short", "abc", {"3 bytes", "too short"}},
      {"header past end", raw_file("{}", "").substr(0, 8) + "{", {"truncated", "header length 2"}},
      {"huge header length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", {"implausible"}},
      {"not json", raw_file("{nope", ""), {"not valid JSON"}},
      {"not an object", raw_file("[1]     ", ""), {"does not start with '{'"}},
      {"json array in braces", raw_file("{\"w\": 3}", ""), {"tensor 'w'", "not an object"}},
      {"unknown dtype", raw_file(R"({"w":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", "x"),
       {"unknown dtype 'Q7'"}},
      {"missing dtype", raw_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", four), {"'dtype'"}},
      {"negative dim", raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four),
       {"non-negative"}},
      {"float dim", raw_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", four),
       {"non-negative integers"}},
      {"bad offsets", raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", four),
       {"data_offsets"}},
      {"offsets reversed", raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", four),
       {"end before they begin"}},
      {"shape vs span", raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
       {"tensor 'w'", "shape [3] of F32 is 12 bytes", "span 8 bytes"}},
      {"truncated data", good.substr(0, good.size() - 3), {"truncated or bad offsets", "'w'", "holds 5 bytes"}},
      {"overlap",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                eight),
       {"overlap"}},
      {"hole",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
       {"belong to no tensor"}},
      {"trailing bytes", raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
       {"trailing"}},
      {"metadata not strings", raw_file(R"({"__metadata__":{"format":1}})", ""), {"__metadata__", "'format'"}},
      {"metadata not object", raw_file(R"({"__metadata__":[1]})", ""), {"__metadata__"}},
      {"overflow", raw_file(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight),
       {"overflows"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    std::string path = dir / (std::string(c.what) + ".safetensors");
    write_bytes(path, c.bytes);
    try {
      SafetensorsFile f(path);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      for (const auto& frag : c.fragments) EXPECT_NE(msg.find(frag), std::string::npos) << msg << "\nmissing: " << frag;
    }
  }
  expect_error([&] { SafetensorsFile f(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile f(dir.path()); }, {"not a regular file"});
}

TEST(Safetensors, ShardedIndexOpensEachShardOnce) {
  TempDir dir;
  std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"x.a", Tensor(a.data(), DType::F32, Device::CPU, {2})}});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    {{"x.b", Tensor(b.data(), DType::F32, Device::CPU, {3})},
                     {"x.c", Tensor(b.data(), DType::F32, Device::CPU, {1})}});
  nlohmann::json idx = {{"metadata", {{"total_size", 24}}},
                        {"weight_map",
                         {{"x.a", "model-00001-of-00002.safetensors"},
                          {"x.b", "model-00002-of-00002.safetensors"},
                          {"x.c", "model-00002-of-00002.safetensors"}}}};
  write_file_atomic(dir / "model.safetensors.index.json", idx.dump());
  SafetensorsShards s(dir.path());
  EXPECT_EQ(s.files().size(), 2u);
  EXPECT_EQ(s.names(), (std::vector<std::string>{"x.a", "x.b", "x.c"}));
  EXPECT_EQ(s.tensor("x.b").ptr<float>()[2], 5.0f);
  EXPECT_NE(s.file_of("x.a").path().find("00001"), std::string::npos);
  expect_error([&] { s.tensor("x.z"); }, {"model.safetensors.index.json", "no tensor named 'x.z'"});

  // A single model.safetensors wins over an index, as in transformers.
  write_safetensors(dir / "model.safetensors", {{"only", Tensor(a.data(), DType::F32, Device::CPU, {2})}});
  EXPECT_EQ(SafetensorsShards(dir.path()).names(), std::vector<std::string>{"only"});
  // A file path opens that file alone.
  EXPECT_EQ(SafetensorsShards(dir / "model-00001-of-00002.safetensors").names(), std::vector<std::string>{"x.a"});
}

TEST(Safetensors, BadIndexesFailClearly) {
  TempDir dir;
  std::vector<float> a = {1, 2};
  write_safetensors(dir / "s1.safetensors", {{"x.a", Tensor(a.data(), DType::F32, Device::CPU, {2})},
                                             {"x.extra", Tensor(a.data(), DType::F32, Device::CPU, {1})}});
  auto index = [&](const std::string& name, const nlohmann::json& j) {
    write_file_atomic(dir / name, j.dump());
    return dir / name;
  };
  expect_error([&] { SafetensorsShards s(index("i1.json", {{"weight_map", {{"x.a", "s1.safetensors"}}}})); },
               {"i1.json", "'x.extra'", "does not list"});
  expect_error([&] {
    SafetensorsShards s(index("i2.json", {{"weight_map", {{"x.a", "s1.safetensors"}, {"x.extra", "s1.safetensors"},
                                                          {"x.b", "s1.safetensors"}}}}));
  }, {"i2.json", "'x.b'", "no such tensor"});
  expect_error([&] { SafetensorsShards s(index("i3.json", {{"weight_map", {{"x.a", "../s1.safetensors"}}}})); },
               {"not a plain file name"});
  expect_error([&] { SafetensorsShards s(index("i4.json", {{"metadata", {}}})); }, {"i4.json", "weight_map"});
  expect_error([&] { SafetensorsShards s(index("i5.json", {{"weight_map", {{"x.a", "gone.safetensors"}}}})); },
               {"gone.safetensors", "cannot open"});
  write_file_atomic(dir / "i6.json", "{\"weight_map\": ");
  expect_error([&] { SafetensorsShards s(dir / "i6.json"); }, {"i6.json", "invalid JSON"});
  std::string empty = dir / "emptydir";
  fs::create_directory(empty);
  expect_error([&] { SafetensorsShards s(empty); }, {"emptydir", "no model.safetensors"});
}

TEST(Convert, FloatConversionsRoundToNearestEven) {
  std::vector<float> src = {1.0f, f32_from_bits(0x3f808000u), f32_from_bits(0x3f818000u), -65504.0f, 1e-8f, 70000.0f};
  std::vector<uint16_t> bf(src.size()), h(src.size());
  convert_elements(bf.data(), DType::BF16, src.data(), DType::F32, static_cast<int64_t>(src.size()));
  convert_elements(h.data(), DType::F16, src.data(), DType::F32, static_cast<int64_t>(src.size()));
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(bf[i], f32_to_bf16_bits(src[i]));
    EXPECT_EQ(h[i], f32_to_f16_bits(src[i]));
  }
  std::vector<double> d(src.size());
  convert_elements(d.data(), DType::F64, bf.data(), DType::BF16, static_cast<int64_t>(src.size()));
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(d[i], static_cast<double>(bf16_bits_to_f32(bf[i])));
  // Large enough to take the threaded path; every element checked.
  const int64_t n = (int64_t{1} << 18) + 3;
  std::vector<uint16_t> big(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) big[static_cast<size_t>(i)] = static_cast<uint16_t>(i * 2654435761u >> 16);
  std::vector<float> out(static_cast<size_t>(n));
  convert_elements(out.data(), DType::F32, big.data(), DType::F16, n);
  for (int64_t i = 0; i < n; ++i) {
    float want = f16_bits_to_f32(big[static_cast<size_t>(i)]);
    if (std::isnan(want)) EXPECT_TRUE(std::isnan(out[static_cast<size_t>(i)]));
    else ASSERT_EQ(out[static_cast<size_t>(i)], want) << i;
  }
  EXPECT_FALSE(can_convert(DType::F32, DType::I32));
  EXPECT_THROW(convert_elements(out.data(), DType::I32, src.data(), DType::F32, 1), Error);
}

TEST(Json, ReadsAndWritesPythonsNonFiniteNumbers) {
  auto j = parse_json(R"({"limit": [0.0, Infinity], "neg": -Infinity, "n": NaN, "s": "Infinity \"NaN\""})", "t");
  EXPECT_TRUE(std::isinf(j["limit"][1].get<double>()));
  EXPECT_LT(j["neg"].get<double>(), 0);
  EXPECT_TRUE(std::isinf(j["neg"].get<double>()));
  EXPECT_TRUE(std::isnan(j["n"].get<double>()));
  EXPECT_EQ(j["s"].get<std::string>(), "Infinity \"NaN\"");
  std::string out = dump_json(j, -1);
  EXPECT_NE(out.find("[0.0,Infinity]"), std::string::npos) << out;
  EXPECT_NE(out.find("-Infinity"), std::string::npos);
  EXPECT_NE(out.find("NaN"), std::string::npos);
  EXPECT_TRUE(std::isinf(parse_json(out, "again")["limit"][1].get<double>()));
  // transformers 5.17 writes time_step_limit as [0.0, {"__float__": "Infinity"}].
  auto t5 = parse_json(R"({"time_step_limit": [0.0, {"__float__": "Infinity"}], "x": {"__float__": "-Infinity"},
                          "keep": {"__float__": "words"}})", "t5");
  EXPECT_TRUE(std::isinf(t5["time_step_limit"][1].get<double>()));
  EXPECT_LT(t5["x"].get<double>(), 0);
  EXPECT_TRUE(t5["keep"].is_object());
  expect_error([] { parse_json("{\"a\": }", "cfg.json"); }, {"cfg.json", "invalid JSON"});
}

TEST(File, AtomicWriteLeavesNothingOnFailure) {
  TempDir dir;
  write_file_atomic(dir / "a.txt", "hello");
  EXPECT_EQ(read_file(dir / "a.txt"), "hello");
  EXPECT_THROW(write_file_atomic(dir / "a.txt", [](int) { fail(ErrorKind::Io, "disk full (simulated)"); }), Error);
  EXPECT_EQ(read_file(dir / "a.txt"), "hello");  // the old file is untouched
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  expect_error([&] { read_file(dir / "missing.txt"); }, {"missing.txt", "cannot open"});
}

}  // namespace
}  // namespace hlm
