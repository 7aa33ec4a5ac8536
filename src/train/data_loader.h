// Training rows packed from an indexed dataset. Each epoch concatenates the (non-empty) documents
// in a seeded shuffled order into one token stream; row r is the T+1 tokens starting at r·T, so
// consecutive rows share one token (Megatron's GPTDataset layout: every token but the first is a
// target exactly once), and the stream's tail shorter than a row is dropped. Rows are served in a
// second seeded permutation. Everything is a pure function of (seed, epoch, position): a saved
// LoaderState resumes bitwise identically.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "io/indexed_dataset.h"

namespace hlm {

// B rows of T+1 tokens: inputs are tokens[:, 0:T], targets tokens[:, 1:T+1].
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;  // [B, T+1]
  // [B, T+1]: which document of the row each token belongs to: 0 for the row's first token, +1 at
  // every document start (an EOD belongs to the document it ends). doc[b][t+1] != doc[b][t] means
  // target t is the first token of a new document, predicted across the boundary.
  std::vector<int32_t> doc;

  const int32_t* row_tokens(int64_t b) const { return tokens.data() + b * (T + 1); }
  const int32_t* row_docs(int64_t b) const { return doc.data() + b * (T + 1); }
  // Contiguous [B, T] copies: inputs, targets and the inputs' document ids (what the model takes).
  void split(std::vector<int32_t>& inputs, std::vector<int32_t>& targets,
             std::vector<int32_t>& docs) const;
};

// Where a DataLoader is, plus what it must match on restore. JSON via to_json / from_json.
struct LoaderState {
  uint64_t seed = 0;
  int64_t epoch = 0;
  int64_t position = 0;    // rows of this epoch already served
  int64_t seq_len = 0;     // T
  int64_t batch_size = 0;  // B when saved (informational: rows, not batches, are counted)
  bool shuffle = true;
  int64_t num_documents = 0;  // the dataset's shape, checked on restore
  int64_t num_tokens = 0;
};
void to_json(nlohmann::json& j, const LoaderState& s);
// Throws hlm::Error (Format) naming a missing or mistyped field.
void from_json(const nlohmann::json& j, LoaderState& s);

// The epoch's document order, stream offsets and row order (internal to the loaders).
struct PackedEpoch {
  std::vector<int64_t> order;  // document ids in stream order
  std::vector<int64_t> start;  // start[k]: stream offset of order[k]; start.back() = tokens
  std::vector<int64_t> rows;   // row permutation; empty = in order
};

class DataLoader {
 public:
  // Fails if the dataset holds fewer than T+1 tokens or has no integer dtype. The dataset must
  // outlive the loader.
  DataLoader(const IndexedDataset& data, int64_t B, int64_t T, uint64_t seed, bool shuffle = true);

  Batch next();
  void next(Batch& batch);  // reuses batch's buffers

  LoaderState state() const;
  // Continues exactly where `s` was saved (its seed, epoch, position). T, shuffle and the
  // dataset's shape must match (InvalidArgument otherwise); B may differ.
  void restore(const LoaderState& s);

  int64_t rows_per_epoch() const { return rows_per_epoch_; }
  int64_t tokens_per_epoch() const { return rows_per_epoch_ * T_; }  // targets per epoch
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }

 private:
  void begin_epoch(int64_t epoch);
  const IndexedDataset& data_;
  int64_t B_, T_;
  uint64_t seed_;
  bool shuffle_;
  std::vector<int64_t> docs_;  // non-empty documents
  int64_t rows_per_epoch_ = 0;
  int64_t epoch_ = 0, position_ = 0;
  PackedEpoch layout_;
};

// Walks a dataset once, in stored order, with the same packing (for validation loss): batches of
// B rows, the last one possibly smaller; at most max_rows rows when max_rows > 0.
class EvalLoader {
 public:
  EvalLoader(const IndexedDataset& data, int64_t B, int64_t T, int64_t max_rows = 0);
  bool next(Batch& batch);  // false once every row has been served
  void reset() { position_ = 0; }
  int64_t num_rows() const { return num_rows_; }
  int64_t num_batches() const { return (num_rows_ + B_ - 1) / B_; }

 private:
  const IndexedDataset& data_;
  int64_t B_, T_;
  int64_t num_rows_ = 0, position_ = 0;
  PackedEpoch layout_;
};

}  // namespace hlm
