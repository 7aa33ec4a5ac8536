// Decode attention kernels (one query token per row against a bf16 KV cache), split out of
// attention.cu so that the host emulation (tools/cuda_emu) can check them; attention.cu's
// attention_decode validates the tensors and calls attention_decode_run.
#pragma once

#include <cstdint>

namespace hlm::cuda {

struct DecodeProblem {
  const void* q;  // bf16 [B, Hq·E], row stride ldq
  const void* k;  // bf16 [B·S, Hkv·E], row stride ldk (16-byte aligned rows)
  const void* v;
  void* out;      // bf16 [B, Hq·E], row stride ldo
  const int32_t* start;  // [B]: row b attends to cache positions [start[b], min(len[b], S))
  const int32_t* len;
  int64_t ldq, ldk, ldv, ldo;
  int B, S, Hq, Hkv, E;  // E = 64 or 128
  float scale;
};

void attention_decode_run(const DecodeProblem& p);

}  // namespace hlm::cuda
