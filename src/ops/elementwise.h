// Small whole-tensor ops the layers glue together with: conversion, fills, scaled adds, norms.
#pragma once

#include "ops/dispatch.h"

namespace hlm {

// dst = src, converting between float dtypes (F32, F64, BF16, F16); equal numel, row views.
HLM_DECLARE_OP(void, convert, (const Tensor& src, const Tensor& dst))
// y += alpha · x (same shape, row views).
HLM_DECLARE_OP(void, add_scaled, (const Tensor& x, float alpha, const Tensor& y))
// Every element = value.
HLM_DECLARE_OP(void, fill, (const Tensor& t, double value))
// Element i (flat index, contiguous t) = mean + stddev · rng_normal(seed, stream, i): the same
// values on every device (core/rng.h), so weights initialised on the GPU equal the CPU's.
HLM_DECLARE_OP(void, fill_normal, (const Tensor& t, uint64_t seed, uint64_t stream, float mean, float stddev))
// t *= s.
HLM_DECLARE_OP(void, scale_inplace, (const Tensor& t, float s))
// Σ t², accumulated in double, returned to the host; deterministic.
HLM_DECLARE_OP(double, sum_squares, (const Tensor& t))

}  // namespace hlm
