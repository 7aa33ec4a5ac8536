// Batched prefill + decode loop.
#include "infer/generator.h"

#include <algorithm>
#include <chrono>

#include "core/memory.h"

namespace hlm {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Copies the [B,V] logits (any row stride, any device) to host floats.
std::vector<float> host_logits(const Tensor& lg) {
  if (lg.dtype == DType::F32) return to_host<float>(lg);
  std::vector<float> out(static_cast<size_t>(lg.numel()));
  if (lg.dtype == DType::F64) {
    std::vector<double> d = to_host<double>(lg);
    std::copy(d.begin(), d.end(), out.begin());
  } else {
    HLM_ASSERT(lg.dtype == DType::BF16);
    std::vector<uint16_t> h = to_host<uint16_t>(lg);
    for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_bits_to_f32(h[i]);
  }
  return out;
}
}  // namespace

GenerateResult generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                        const GenerateOptions& opt, const TokenCallback& on_token) {
  opt.sampling.validate();
  HLM_CHECK_ARG(!prompts.empty(), "generate: no prompts");
  HLM_CHECK_ARG(opt.max_new_tokens >= 0, "--max-new-tokens must be >= 0 (got {})", opt.max_new_tokens);
  const int64_t B = static_cast<int64_t>(prompts.size());
  const int64_t V = model.config().vocab_size;
  int64_t T = 0;
  for (const auto& p : prompts) {
    HLM_CHECK_ARG(!p.empty(), "generate: a prompt is empty (give at least one token)");
    for (int32_t id : p)
      HLM_CHECK_ARG(id >= 0 && id < V, "generate: prompt token {} outside the vocabulary (0..{})", id, V - 1);
    T = std::max<int64_t>(T, static_cast<int64_t>(p.size()));
  }
  const int64_t capacity = opt.max_context > 0 ? opt.max_context : T + opt.max_new_tokens;
  HLM_CHECK_ARG(T + opt.max_new_tokens <= capacity,
                "prompt of {} tokens + {} new tokens exceeds the maximum context of {}", T,
                opt.max_new_tokens, capacity);

  // Left padding: the pad positions form document 0, each prompt document 1.
  std::vector<int32_t> ids(static_cast<size_t>(B * T), 0), doc(static_cast<size_t>(B * T), 1);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    int64_t pad = T - static_cast<int64_t>(p.size());
    for (int64_t t = 0; t < T; ++t) {
      ids[static_cast<size_t>(b * T + t)] = t < pad ? 0 : p[static_cast<size_t>(t - pad)];
      doc[static_cast<size_t>(b * T + t)] = t < pad ? 0 : 1;
    }
  }
  std::vector<int32_t> pos = positions_from_docs(doc.data(), B, T);
  const Device dev = model.device();
  Buffer dbuf(dev, static_cast<size_t>(3 * B * T) * sizeof(int32_t));
  int32_t* base = static_cast<int32_t*>(dbuf.data());
  device_copy(base, dev, ids.data(), Device::CPU, ids.size() * sizeof(int32_t));
  device_copy(base + B * T, dev, doc.data(), Device::CPU, doc.size() * sizeof(int32_t));
  device_copy(base + 2 * B * T, dev, pos.data(), Device::CPU, pos.size() * sizeof(int32_t));
  ModelInput in;
  in.ids = Tensor(base, DType::I32, dev, {B, T});
  in.doc = Tensor(base + B * T, DType::I32, dev, {B, T});
  in.pos = Tensor(base + 2 * B * T, DType::I32, dev, {B, T});

  GenerateResult res;
  res.tokens.resize(static_cast<size_t>(B));
  if (opt.max_new_tokens == 0) return res;
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < B; ++b) samplers.emplace_back(opt.sampling, static_cast<uint64_t>(b));
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<int32_t> next(static_cast<size_t>(B), 0);

  InferenceState st = model.new_state(B, capacity);
  auto t0 = Clock::now();
  Tensor logits = model.prefill(in, st);
  std::vector<float> host = host_logits(logits);
  res.prefill_seconds = seconds_since(t0);
  t0 = Clock::now();
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      if (done[static_cast<size_t>(b)]) continue;
      int32_t tok = samplers[static_cast<size_t>(b)].sample(
          std::span<const float>(host.data() + b * V, static_cast<size_t>(V)));
      next[static_cast<size_t>(b)] = tok;
      res.tokens[static_cast<size_t>(b)].push_back(tok);
      bool keep = on_token ? on_token(b, tok) : true;
      if (!keep || std::find(opt.stop_ids.begin(), opt.stop_ids.end(), tok) != opt.stop_ids.end())
        done[static_cast<size_t>(b)] = true;
      else
        any = true;
    }
    if (!any || step + 1 == opt.max_new_tokens) break;
    logits = model.decode(Tensor(next.data(), DType::I32, Device::CPU, {B}), st);  // ids go up with the step's lengths
    host = host_logits(logits);
    ++res.decode_steps;
  }
  res.decode_seconds = seconds_since(t0);
  return res;
}

}  // namespace hlm
