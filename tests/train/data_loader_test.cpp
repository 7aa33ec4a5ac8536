// train/data_loader: rows are T+1-token slices of the epoch's document stream with correct
// per-token document numbers, every row is served once per epoch, batches are a pure function of
// the seed, a saved state resumes bitwise identically, and the evaluation loader walks in order
// once.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "io/indexed_dataset.h"
#include "train/data_loader.h"

namespace hlm {
namespace {

namespace fs = std::filesystem;

// A dataset whose tokens name themselves: token = 1000·(doc + 1) + position, the last one of each
// document standing for its EOD. Lengths vary, one document is empty.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "hlm_loader_XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    prefix_ = (dir_ / "d").string();
    IndexedDatasetWriter w(prefix_, TokenDType::I32);
    const std::vector<int32_t> lengths = {7, 1, 30, 0, 12, 5, 19, 3, 64, 2, 9, 25};
    for (size_t d = 0; d < lengths.size(); ++d) {
      std::vector<int32_t> doc;
      for (int32_t i = 0; i < lengths[d]; ++i)
        doc.push_back(1000 * static_cast<int32_t>(d + 1) + i);
      w.add_document(doc);
      total_ += lengths[d];
    }
    w.finish();
    data_ = std::make_unique<IndexedDataset>(prefix_);
  }
  void TearDown() override {
    data_.reset();
    fs::remove_all(dir_);
  }
  static int32_t doc_of(int32_t token) { return token / 1000 - 1; }
  static int32_t pos_of(int32_t token) { return token % 1000; }

  fs::path dir_;
  std::string prefix_;
  int64_t total_ = 0;
  std::unique_ptr<IndexedDataset> data_;
};

// Checks one row: tokens run through documents in order and the doc numbers follow the starts.
void check_row(const int32_t* tok, const int32_t* doc, int64_t T, const IndexedDataset& data) {
  EXPECT_EQ(doc[0], 0);
  for (int64_t t = 1; t <= T; ++t) {
    bool same_doc = tok[t] / 1000 == tok[t - 1] / 1000;
    if (same_doc) {
      EXPECT_EQ(tok[t], tok[t - 1] + 1) << "t=" << t;
      EXPECT_EQ(doc[t], doc[t - 1]);
    } else {
      EXPECT_EQ(tok[t] % 1000, 0) << "a new document starts at its first token";
      EXPECT_EQ(tok[t - 1] % 1000, data.document_length(tok[t - 1] / 1000 - 1) - 1)
          << "previous one ended";
      EXPECT_EQ(doc[t], doc[t - 1] + 1);
    }
  }
}

TEST_F(LoaderTest, InOrderRowsAreOverlappingSlicesOfTheStream) {
  const int64_t B = 3, T = 8;
  DataLoader loader(*data_, B, T, 7, /*shuffle=*/false);
  EXPECT_EQ(loader.rows_per_epoch(), (total_ - 1) / T);
  EXPECT_EQ(loader.tokens_per_epoch(), loader.rows_per_epoch() * T);
  std::vector<int32_t> stream;
  for (int64_t d = 0; d < data_->num_documents(); ++d) {
    auto v = data_->document(d);
    stream.insert(stream.end(), v.begin(), v.end());
  }
  int64_t row = 0;
  for (int step = 0; step < 4; ++step) {
    Batch b = loader.next();
    ASSERT_EQ(b.B, B);
    ASSERT_EQ(b.tokens.size(), static_cast<size_t>(B * (T + 1)));
    for (int64_t r = 0; r < B; ++r, ++row) {
      for (int64_t t = 0; t <= T; ++t)
        ASSERT_EQ(b.row_tokens(r)[t], stream[static_cast<size_t>(row * T + t)]);
      check_row(b.row_tokens(r), b.row_docs(r), T, *data_);
    }
  }
  Batch b = loader.next();
  std::vector<int32_t> in, tg, dc;
  b.split(in, tg, dc);
  EXPECT_EQ(in[static_cast<size_t>(T)], b.row_tokens(1)[0]);
  EXPECT_EQ(tg[0], b.row_tokens(0)[1]);
  EXPECT_EQ(dc[static_cast<size_t>(T - 1)], b.row_docs(0)[T - 1]);
}

TEST_F(LoaderTest, EachEpochServesEveryRowOnceInANewOrder) {
  const int64_t T = 5;
  DataLoader loader(*data_, 1, T, 42, true);
  const int64_t rows = loader.rows_per_epoch();
  std::vector<std::vector<int32_t>> first_tokens(2);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::multiset<int32_t> seen;  // every token that is a target, over the epoch
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_EQ(loader.epoch(), epoch);
      Batch b = loader.next();
      check_row(b.tokens.data(), b.doc.data(), T, *data_);
      for (int64_t t = 1; t <= T; ++t) seen.insert(b.tokens[static_cast<size_t>(t)]);
      first_tokens[static_cast<size_t>(epoch)].push_back(b.tokens[0]);
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), rows * T);
    int64_t distinct = static_cast<int64_t>(std::set<int32_t>(seen.begin(), seen.end()).size());
    EXPECT_EQ(distinct, rows * T) << "no target twice in an epoch";
  }
  EXPECT_NE(first_tokens[0], first_tokens[1]) << "epochs differ";
  Batch b = loader.next();
  EXPECT_EQ(loader.epoch(), 2);
}

TEST_F(LoaderTest, SameSeedSameBatchesOtherSeedOther) {
  DataLoader a(*data_, 4, 6, 123), b(*data_, 4, 6, 123), c(*data_, 4, 6, 124);
  bool any_differs = false;
  for (int i = 0; i < 20; ++i) {  // several epochs (19 rows per epoch)
    Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.doc, y.doc);
    any_differs |= x.tokens != z.tokens;
  }
  EXPECT_TRUE(any_differs);
}

TEST_F(LoaderTest, RestoreContinuesBitwise) {
  for (int saved_after : {0, 3, 5, 11}) {  // 5 and 11 straddle epoch ends (19 rows, B=4)
    DataLoader straight(*data_, 4, 6, 99);
    std::vector<Batch> want;
    for (int i = 0; i < saved_after + 8; ++i) want.push_back(straight.next());

    DataLoader first(*data_, 4, 6, 99);
    for (int i = 0; i < saved_after; ++i) first.next();
    std::string saved = nlohmann::json(first.state()).dump();

    DataLoader resumed(*data_, 4, 6, /*seed=*/1);  // the state's seed wins
    resumed.restore(nlohmann::json::parse(saved).get<LoaderState>());
    for (int i = saved_after; i < saved_after + 8; ++i) {
      Batch b = resumed.next();
      ASSERT_EQ(b.tokens, want[static_cast<size_t>(i)].tokens)
          << "batch " << i << " after " << saved_after;
      ASSERT_EQ(b.doc, want[static_cast<size_t>(i)].doc);
    }
  }
}

TEST_F(LoaderTest, RestoreRejectsAStateOfAnotherShape) {
  DataLoader a(*data_, 2, 6, 5);
  a.next();
  LoaderState s = a.state();
  DataLoader other_t(*data_, 2, 7, 5);
  EXPECT_THROW(other_t.restore(s), Error);
  DataLoader no_shuffle(*data_, 2, 6, 5, false);
  EXPECT_THROW(no_shuffle.restore(s), Error);
  LoaderState bad = s;
  bad.num_tokens += 1;
  EXPECT_THROW(a.restore(bad), Error);
  DataLoader other_b(*data_, 3, 6, 5);
  EXPECT_NO_THROW(other_b.restore(s));  // rows, not batches, are counted
  try {
    nlohmann::json j = s;
    j.erase("position");
    j.get<LoaderState>();
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing field 'position'"), std::string::npos);
  }
}

TEST_F(LoaderTest, EvalLoaderWalksInOrderOnce) {
  const int64_t B = 4, T = 10;
  EvalLoader eval(*data_, B, T);
  EXPECT_EQ(eval.num_rows(), (total_ - 1) / T);
  Batch b;
  int64_t rows = 0, batches = 0;
  int32_t expect_next = 1000;  // first token of document 0
  while (eval.next(b)) {
    ++batches;
    for (int64_t r = 0; r < b.B; ++r, ++rows) {
      EXPECT_EQ(b.row_tokens(r)[0], expect_next);
      check_row(b.row_tokens(r), b.row_docs(r), T, *data_);
      expect_next = b.row_tokens(r)[T];
    }
  }
  EXPECT_EQ(rows, eval.num_rows());
  EXPECT_EQ(batches, eval.num_batches());
  EXPECT_LT(b.B, B);  // 18 rows in batches of 4: the last has 2
  eval.reset();
  ASSERT_TRUE(eval.next(b));
  EXPECT_EQ(b.tokens[0], 1000);
  EvalLoader capped(*data_, B, T, 5);
  EXPECT_EQ(capped.num_rows(), 5);
}

TEST_F(LoaderTest, TooSmallDatasetIsAClearError) {
  try {
    DataLoader big(*data_, 1, total_, 0);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than one row"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(DataLoader(*data_, 1, total_ - 1, 0).next());
  EXPECT_THROW(DataLoader(*data_, 0, 4, 0), Error);
}

}  // namespace
}  // namespace hlm
