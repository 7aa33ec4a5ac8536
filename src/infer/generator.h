// Generation: prompts of different lengths are left-padded into one batch (the padding is an
// earlier "document", so no state or attention crosses into the prompt), prefilled with the full
// forward, then decoded one token at a time with the recurrent step.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infer/sampler.h"
#include "model/model.h"

namespace hlm {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;  // a row stops after emitting one of these (e.g. end-of-text)
  int64_t max_context = 0;        // 0: prompt + max_new_tokens
};

// Called for every new token: (row, token id). Return false to stop that row.
using TokenCallback = std::function<bool(int64_t row, int32_t token)>;

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // new tokens per row (stop token included)
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t decode_steps = 0;
};

GenerateResult generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                        const GenerateOptions& opt, const TokenCallback& on_token = nullptr);

}  // namespace hlm
