// Packed rows over an indexed dataset: per-epoch shuffled document stream, rows of T+1 tokens with
// a one-token overlap, per-token document numbers; randomness from Philox streams keyed by the
// seed.
#include "train/data_loader.h"

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"

namespace hlm {

namespace {

// Philox streams of the loader ("LOAD" in the high half keeps them apart from other users of the
// same seed): documents of epoch e on 2e, rows on 2e + 1.
constexpr uint64_t kStreamBase = 0x4C4F414400000000ull;

void shuffle_in_place(std::vector<int64_t>& v, uint64_t seed, uint64_t stream) {
  Rng rng(seed, stream);
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rng.below(i));
    std::swap(v[i - 1], v[j]);
  }
}

PackedEpoch pack(const IndexedDataset& data, std::vector<int64_t> order) {
  PackedEpoch p;
  p.order = std::move(order);
  p.start.resize(p.order.size() + 1);
  p.start[0] = 0;
  for (size_t k = 0; k < p.order.size(); ++k)
    p.start[k + 1] = p.start[k] + data.document_length(p.order[k]);
  return p;
}

// Stream tokens [pos, pos + T + 1) and their document numbers within the row.
void fill_row(const IndexedDataset& data, const PackedEpoch& p, int64_t pos, int64_t T,
              int32_t* tokens, int32_t* doc) {
  auto it = std::upper_bound(p.start.begin(), p.start.end(), pos);
  size_t k = static_cast<size_t>(it - p.start.begin()) - 1;
  int64_t offset = pos - p.start[k], filled = 0;
  int32_t number = 0;
  while (filled < T + 1) {
    HLM_ASSERT(k < p.order.size());
    int64_t take = std::min(p.start[k + 1] - p.start[k] - offset, T + 1 - filled);
    data.read_document(p.order[k], offset, take, tokens + filled);
    std::fill(doc + filled, doc + filled + take, number);
    filled += take;
    ++number;
    ++k;
    offset = 0;
  }
}

std::vector<int64_t> non_empty_documents(const IndexedDataset& data) {
  std::vector<int64_t> docs;
  for (int64_t d = 0; d < data.num_documents(); ++d) {
    if (data.document_length(d) > 0) docs.push_back(d);
  }
  return docs;
}

void check_shape(const IndexedDataset& data, int64_t B, int64_t T, const char* who) {
  HLM_CHECK_ARG(B > 0 && T > 0, "{}: batch size {} and sequence length {} must be positive", who, B,
                T);
  TokenDType dt = data.dtype();
  HLM_CHECK_ARG(dt != TokenDType::F32 && dt != TokenDType::F64,
                "{}: dataset {} holds {} values, not token ids", who, data.prefix(),
                token_dtype_name(dt));
  HLM_CHECK_ARG(data.num_tokens() >= T + 1,
                "{}: dataset {} has {} tokens, fewer than one row of T+1 = {}", who, data.prefix(),
                data.num_tokens(), T + 1);
}

void resize_batch(Batch& batch, int64_t B, int64_t T) {
  batch.B = B;
  batch.T = T;
  batch.tokens.resize(static_cast<size_t>(B * (T + 1)));
  batch.doc.resize(static_cast<size_t>(B * (T + 1)));
}

}  // namespace

void Batch::split(std::vector<int32_t>& inputs, std::vector<int32_t>& targets,
                  std::vector<int32_t>& docs) const {
  inputs.resize(static_cast<size_t>(B * T));
  targets.resize(static_cast<size_t>(B * T));
  docs.resize(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* t = row_tokens(b);
    const int32_t* d = row_docs(b);
    std::copy(t, t + T, inputs.begin() + b * T);
    std::copy(t + 1, t + T + 1, targets.begin() + b * T);
    std::copy(d, d + T, docs.begin() + b * T);
  }
}

// ---------------------------------------------------------------------------------------------
// State as JSON

void to_json(nlohmann::json& j, const LoaderState& s) {
  j = nlohmann::json{{"seed", s.seed},
                     {"epoch", s.epoch},
                     {"position", s.position},
                     {"seq_len", s.seq_len},
                     {"batch_size", s.batch_size},
                     {"shuffle", s.shuffle},
                     {"num_documents", s.num_documents},
                     {"num_tokens", s.num_tokens}};
}

void from_json(const nlohmann::json& j, LoaderState& s) {
  if (!j.is_object()) fail(ErrorKind::Format, "loader state: expected a JSON object");
  auto get = [&](const char* key, auto& out) {
    auto it = j.find(key);
    if (it == j.end()) fail(ErrorKind::Format, "loader state: missing field '{}'", key);
    try {
      it->get_to(out);
    } catch (const nlohmann::json::exception&) {
      fail(ErrorKind::Format, "loader state: field '{}' has the wrong type ({})", key, it->dump());
    }
  };
  get("seed", s.seed);
  get("epoch", s.epoch);
  get("position", s.position);
  get("seq_len", s.seq_len);
  get("batch_size", s.batch_size);
  get("shuffle", s.shuffle);
  get("num_documents", s.num_documents);
  get("num_tokens", s.num_tokens);
}

// ---------------------------------------------------------------------------------------------
// Training loader

DataLoader::DataLoader(const IndexedDataset& data, int64_t B, int64_t T, uint64_t seed,
                       bool shuffle)
    : data_(data), B_(B), T_(T), seed_(seed), shuffle_(shuffle) {
  check_shape(data, B, T, "data loader");
  docs_ = non_empty_documents(data);
  rows_per_epoch_ = (data.num_tokens() - 1) / T;
  begin_epoch(0);
}

void DataLoader::begin_epoch(int64_t epoch) {
  std::vector<int64_t> order = docs_;
  if (shuffle_) shuffle_in_place(order, seed_, kStreamBase + 2 * static_cast<uint64_t>(epoch));
  layout_ = pack(data_, std::move(order));
  layout_.rows.clear();
  if (shuffle_) {
    layout_.rows.resize(static_cast<size_t>(rows_per_epoch_));
    for (int64_t r = 0; r < rows_per_epoch_; ++r) layout_.rows[static_cast<size_t>(r)] = r;
    shuffle_in_place(layout_.rows, seed_, kStreamBase + 2 * static_cast<uint64_t>(epoch) + 1);
  }
  epoch_ = epoch;
  position_ = 0;
}

void DataLoader::next(Batch& batch) {
  resize_batch(batch, B_, T_);
  for (int64_t b = 0; b < B_; ++b) {
    if (position_ == rows_per_epoch_) begin_epoch(epoch_ + 1);
    int64_t row = layout_.rows.empty() ? position_ : layout_.rows[static_cast<size_t>(position_)];
    fill_row(data_, layout_, row * T_, T_, batch.tokens.data() + b * (T_ + 1),
             batch.doc.data() + b * (T_ + 1));
    if (++position_ == rows_per_epoch_) begin_epoch(epoch_ + 1);  // state() then reads (e+1, 0)
  }
}

Batch DataLoader::next() {
  Batch b;
  next(b);
  return b;
}

LoaderState DataLoader::state() const {
  LoaderState s;
  s.seed = seed_;
  s.epoch = epoch_;
  s.position = position_;
  s.seq_len = T_;
  s.batch_size = B_;
  s.shuffle = shuffle_;
  s.num_documents = data_.num_documents();
  s.num_tokens = data_.num_tokens();
  return s;
}

void DataLoader::restore(const LoaderState& s) {
  HLM_CHECK_ARG(s.seq_len == T_,
                "loader state was saved with sequence length {}, this loader has {}", s.seq_len,
                T_);
  HLM_CHECK_ARG(s.shuffle == shuffle_, "loader state was saved with shuffle {}, this loader has {}",
                s.shuffle, shuffle_);
  HLM_CHECK_ARG(s.num_documents == data_.num_documents() && s.num_tokens == data_.num_tokens(),
                "loader state belongs to a dataset of {} documents / {} tokens, not {} ({} / {})",
                s.num_documents, s.num_tokens, data_.prefix(), data_.num_documents(),
                data_.num_tokens());
  HLM_CHECK_ARG(s.epoch >= 0 && s.position >= 0 && s.position <= rows_per_epoch_,
                "loader state: epoch {} position {} out of range (rows per epoch {})", s.epoch,
                s.position, rows_per_epoch_);
  seed_ = s.seed;
  begin_epoch(s.epoch);
  position_ = s.position;
}

// ---------------------------------------------------------------------------------------------
// Evaluation loader

EvalLoader::EvalLoader(const IndexedDataset& data, int64_t B, int64_t T, int64_t max_rows)
    : data_(data), B_(B), T_(T) {
  check_shape(data, B, T, "evaluation loader");
  layout_ = pack(data, non_empty_documents(data));
  num_rows_ = (data.num_tokens() - 1) / T;
  if (max_rows > 0) num_rows_ = std::min(num_rows_, max_rows);
}

bool EvalLoader::next(Batch& batch) {
  if (position_ >= num_rows_) return false;
  int64_t rows = std::min(B_, num_rows_ - position_);
  resize_batch(batch, rows, T_);
  for (int64_t b = 0; b < rows; ++b, ++position_) {
    fill_row(data_, layout_, position_ * T_, T_, batch.tokens.data() + b * (T_ + 1),
             batch.doc.data() + b * (T_ + 1));
  }
  return true;
}

}  // namespace hlm
