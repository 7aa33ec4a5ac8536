// Token embedding lookup and its gradient (a scatter-add into the table).
#pragma once

#include "ops/dispatch.h"

namespace hlm {

// out[m, :] = table[ids[m], :]; ids [M] I32 (any leading shape), table [V,D], out [M,D] rows.
// An id outside [0, V) is an error (InvalidArgument).
HLM_DECLARE_OP(void, embedding_forward, (const Tensor& ids, const Tensor& table, const Tensor& out))
// dtable[ids[m], :] += dout[m, :], deterministic (same order every run).
HLM_DECLARE_OP(void, embedding_backward,
               (const Tensor& ids, const Tensor& dout, const Tensor& dtable))

}  // namespace hlm
