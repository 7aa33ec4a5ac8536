// cuDNN fused attention (flash attention through the backend graph API): forward and backward
// graphs built from backend descriptors, finalized execution plans cached per shape. Used by
// ops/cuda/attention.cu, which falls back to its own kernels when these return false.
#pragma once

#include <string>

#include "ops/attention.h"

namespace hlm::cuda::cudnn_attention {

// Runs the forward through cuDNN. Returns false with *why set when cuDNN cannot take this case
// (library missing, unsupported shape, no engine finalizes); throws on execution errors.
bool forward(const AttentionParams& p, const Tensor& out, const Tensor& lse, std::string* why);

// Runs the backward through cuDNN. deterministic selects the graph whose dQ is written once from a
// dP workspace (no float atomics) — it needs B·Hq·T²·2 bytes of workspace, so above max_workspace
// bytes it runs as several calls over batch rows, KV-head groups or query sub-groups that each fit,
// and is refused (false) only when one query head does not; otherwise dQ accumulates in fp32 with
// atomics.
bool backward(const AttentionParams& p, const Tensor& out, const Tensor& lse, const Tensor& dout,
              const Tensor& dq, const Tensor& dk, const Tensor& dv, bool deterministic,
              size_t max_workspace, std::string* why);

}  // namespace hlm::cuda::cudnn_attention
