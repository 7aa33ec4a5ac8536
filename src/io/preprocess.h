// Text / JSONL -> Megatron indexed dataset: the work behind `hybridlm preprocess`. Documents are
// tokenized in parallel batches and written in input order, so the output does not depend on the
// number of workers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/indexed_dataset.h"
#include "io/tokenizer.h"

namespace hlm {

struct PreprocessOptions {
  std::vector<std::string> inputs;  // files, directories (all files below, sorted) or glob patterns
  std::string output_prefix;        // writes PREFIX.bin and PREFIX.idx
  std::string jsonl_key = "text";   // field holding a document's text in .jsonl inputs
  bool append_eod = true;           // end every document with <|endoftext|>
  int workers = 0;                  // tokenizing threads; 0 = OpenMP's default
};

struct PreprocessProgress {
  int64_t documents = 0;
  int64_t bytes = 0;        // input bytes consumed so far
  int64_t total_bytes = 0;  // sum of the input files' sizes (0 when unknown, e.g. a pipe)
  double seconds = 0;
};

struct PreprocessStats {
  int64_t documents = 0;      // written
  int64_t empty_skipped = 0;  // documents with no text, not written
  int64_t tokens = 0;         // written, EOD included
  int64_t bytes = 0;          // text bytes read
  double seconds = 0;
  TokenDType dtype = TokenDType::U16;
  int32_t eod = -1;  // the appended id, -1 when none
};

// Callbacks for the CLI: the temporary files exist between on_writer_open and on_commit_end.
struct PreprocessHooks {
  std::function<void(const IndexedDatasetWriter&)> on_writer_open;
  std::function<void()> on_commit_begin;  // just before the temp files are renamed into place
  std::function<void()> on_commit_end;    // just after (also when the commit failed)
  std::function<void(const PreprocessProgress&)> on_progress;  // after every batch
};

// Inputs: a directory stands for the regular files below it (recursively, sorted by path, hidden
// ones skipped); a pattern with * ? [ that names no file is expanded by glob(3). A file ending in
// .jsonl holds one JSON object per line (blank lines skipped), any other file is one document.
// Empty documents are skipped (counted in the stats). Errors name the file (and line): a missing
// input, a line that is not JSON, a missing or non-string key, text that is not UTF-8; nothing is
// left behind then. Two runs must not share an output prefix at the same time (same temp names).
PreprocessStats preprocess(const Tokenizer& tokenizer, const PreprocessOptions& options,
                           const PreprocessHooks& hooks = {});

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

}  // namespace hlm
