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
// t *= s.
HLM_DECLARE_OP(void, scale_inplace, (const Tensor& t, float s))
// Σ t², accumulated in double, returned to the host; deterministic.
HLM_DECLARE_OP(double, sum_squares, (const Tensor& t))

}  // namespace hlm
