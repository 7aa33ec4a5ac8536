// The training loop: packed batches → forward/backward (with gradient accumulation) → clipping →
// AdamW on a warmup + cosine/WSD schedule; periodic evaluation, JSONL metrics, atomic checkpoints
// (HF folder + optimizer + loader + step) that resume bitwise identically.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>
#include <functional>
#include <optional>
#include <string>

#include "model/model.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace hlm {

class IndexedDataset;

struct TrainOptions {
  std::string out_dir;        // checkpoints/, metrics.jsonl
  int64_t steps = 100;        // optimizer steps in total
  int64_t batch = 4;          // rows per micro-batch
  int64_t seq_len = 256;      // T
  int64_t grad_accum = 1;     // micro-batches per step
  LrSchedule schedule;
  AdamWConfig adamw;
  double clip = 1.0;          // global gradient-norm clip (0 = off)
  int64_t eval_every = 0;     // 0 = only at the end
  int64_t eval_rows = 64;     // validation rows per evaluation (0 = the whole set)
  int64_t save_every = 0;     // 0 = only at the end
  int64_t keep_last = 2;      // checkpoints kept
  int64_t log_every = 10;
  uint64_t seed = 1234;
  bool resume = false;
  int64_t stop_at = 0;        // testing: stop (after saving) once this step is done
  bool quiet = false;         // no progress line on stderr
  std::vector<std::string> extra_files;        // copied into every checkpoint (tokenizer.json)
  const std::atomic<bool>* interrupted = nullptr;  // set by a signal: save and stop after this step
};

struct TrainSummary {
  int64_t steps_done = 0;
  double last_loss = 0;
  double last_val_loss = -1;
  double tokens_per_second = 0;
  double seconds = 0;
};

class Trainer {
 public:
  Trainer(Model& model, const IndexedDataset& train, const IndexedDataset* val, TrainOptions opt);
  ~Trainer();
  TrainSummary run();
  // Mean next-token loss over up to opt.eval_rows rows of the validation set, in order.
  double evaluate();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hlm
