// Shared pieces of the wgmma SSD kernels (ssd_fwd_wg.cu, ssd_bwd_wg.cu; sm_90a, Q = P = 64): the
// token order of the product rows that balances the causal work over a warpgroup's warps, and the
// cp.async loader of 8 x 8 core-matrix tiles (wgmma.cuh's CoreTile).
#pragma once

#include <cstdint>

#include "ops/cuda/warp_mma.cuh"
#include "ops/cuda/wgmma.cuh"

namespace hlm::cuda::ssd {

using mma::bf16_t;

// The rows of the chunk's products (G, Yo, y: the wgmma M dimension, warp w holding rows 16 w ..
// 16 w + 15) hold the tokens in this order: row 16 w + g holds token 8 w + g and row 16 w + 8 + g
// token 63 - 8 w - g (g < 8), so each warp's causal work is the same (the forward walk's rows t
// with columns s <= t, the backward's rows s with columns t >= s). The tiles whose rows are the
// products' M dimension are stored permuted (load_core_tile_async's kPermute); results are written
// back to their tokens.
__device__ __forceinline__ int token_of_row(int m) {
  const int w = m >> 4, g = m & 7;
  return (m & 8) ? 63 - 8 * w - g : 8 * w + g;
}
__device__ __forceinline__ int row_of_token(int t) {
  if (t < 32) return 16 * (t >> 3) + (t & 7);
  const int u = 63 - t;
  return 16 * (u >> 3) + 8 + (u & 7);
}

// The same balance with whole 8-row blocks (TMA loads a tile's rows by blocks and cannot reverse
// them): row 16 w + g holds token 8 w + g and row 16 w + 8 + g token 56 - 8 w + g, so warp w holds
// token blocks w and 7 - w. Row block rb (rows 8 rb .. 8 rb + 7) is token block
// token_block_of_row_block(rb).
__device__ __forceinline__ int token_of_row_blocks(int m) {
  const int w = m >> 4, g = m & 7;
  return (m & 8) ? 56 - 8 * w + g : 8 * w + g;
}
__host__ __device__ constexpr int token_block_of_row_block(int rb) { return (rb & 1) ? 7 - (rb >> 1) : rb >> 1; }

// Queues cp.async copies of rows [row0, row0 + R) x columns [0, C) of a bf16 row view into a
// CoreTile<R, C>; rows >= valid_rows are zero-filled. As load_tile_async: thread idx of kT copies
// the 16-byte pieces idx, idx + kT, ..., one column and rows kT / (C / 8) apart (a multiple or a
// divisor of 8, so each row's core-matrix offset is the thread's first plus a constant), so source
// and destination advance by constant strides. kUnroll: how far the loop is unrolled (a producer
// warp keeps few registers). With kPermute (R = Q), token r goes to row row_of_token(r).
template <int R, int C, int kT, int kUnroll, bool kPermute = false>
__device__ __forceinline__ void load_core_tile_async(unsigned char* S, const bf16_t* base, int64_t ld, int64_t row0,
                                                     int valid_rows, int idx) {
  using Tile = wg::CoreTile<R, C>;
  constexpr int kPieces = C / 8, kRowStep = kT / kPieces;
  static_assert(kT % kPieces == 0 && (kRowStep % 8 == 0 || 8 % kRowStep == 0) && R % kRowStep == 0,
                "rows within core matrices");
  const int r0 = idx / kPieces, c = idx % kPieces;
  const bf16_t* first = base + row0 * ld + 8 * c;  // a valid row for the zero-filled ones
  const bf16_t* src = first + r0 * ld;
  const int64_t step = kRowStep * ld;
  unsigned char* dst = S + Tile::offset(r0, 8 * c);
#pragma unroll kUnroll
  for (int k = 0; k < R / kRowStep; ++k) {
    const int r = r0 + k * kRowStep;
    const bool valid = r < valid_rows;
    unsigned char* d = kPermute ? S + Tile::offset(row_of_token(r), 8 * c) : dst + Tile::offset(k * kRowStep, 0);
    mma::cp_async16(d, valid ? src + k * step : first, valid);
  }
}

// Queues cp.async copies of kBytes contiguous bytes (a tile already in core-matrix order in global
// memory) to S, by kT threads (this one idx), 16 bytes each per step: plain offsets, no row math.
template <int kBytes, int kT, int kUnroll>
__device__ __forceinline__ void load_contiguous_async(unsigned char* S, const void* src, int idx) {
  static_assert(kBytes % (16 * kT) == 0, "whole steps");
  const auto* g = static_cast<const unsigned char*>(src) + idx * 16;
  unsigned char* d = S + idx * 16;
#pragma unroll kUnroll
  for (int k = 0; k < kBytes / (16 * kT); ++k) mma::cp_async16(d + k * 16 * kT, g + k * 16 * kT, true);
}

// A producer warp's share of a tile copy (lane of 32), unrolled by 4 (not fully: a producer keeps few
// registers).
template <int R, int C, bool kPermute = false>
__device__ __forceinline__ void load_core_tile_warp(unsigned char* S, const bf16_t* base, int64_t ld, int64_t row0,
                                                    int valid_rows, int lane) {
  load_core_tile_async<R, C, 32, 4, kPermute>(S, base, ld, row0, valid_rows, lane);
}

// A copy warp's hand-over of a ring stage: once its copies up to kPending groups ago have landed,
// fenced for the async proxy (wgmma reads them), its lane arrives on the stage's full barrier.
template <int kPending>
__device__ __forceinline__ void arrive_when_landed(uint64_t* full) {
  mma::cp_async_wait<kPending>();
  wg::fence_async_smem();
  mma::mbar_arrive(full);
}

// dst = bf16(src coef[token of the row]) for a 64 x 64 bf16 tile of 8 KB, by kT threads (this one
// idx), 16 contiguous bytes per thread and step; src and dst share the layout, and row_of(byte
// offset) gives the token of the row holding it. Rounded as every SSD kernel rounds x w dt: bf16 of
// the bf16 element times the fp32 coefficient. The caller fences for the async proxy.
template <int kT, class RowOf>
__device__ __forceinline__ void scale_rows(unsigned char* dst, const unsigned char* src, const float* coef, int idx,
                                           RowOf row_of) {
  constexpr int kSteps = 64 * 64 * 2 / 16 / kT;
  uint4 u[kSteps];
#pragma unroll
  for (int k = 0; k < kSteps; ++k) u[k] = *reinterpret_cast<const uint4*>(src + (idx + k * kT) * 16);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    const int off = (idx + k * kT) * 16;
    const float sc = coef[row_of(off)];
    uint32_t v[4] = {u[k].x, u[k].y, u[k].z, u[k].w};
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = mma::pack_bf16x2(mma::bf16_lo(v[e]) * sc, mma::bf16_hi(v[e]) * sc);
    *reinterpret_cast<uint4*>(dst + off) = make_uint4(v[0], v[1], v[2], v[3]);
  }
}
// For a CoreTile<64, 64> (rows permuted by token_of_row() if kPermuted; the activation tiles x, dy).
template <int kT, bool kPermuted>
__device__ __forceinline__ void scale_rows_core(unsigned char* dst, const unsigned char* src, const float* coef,
                                                int idx) {
  scale_rows<kT>(dst, src, coef, idx, [](int off) {
    using TX = wg::CoreTile<64, 64>;
    // byte offset -> row: (r / 8) row groups, then (r % 8) 16-byte rows in a core matrix
    const int r = off / TX::kRowGroup * 8 + (off % 128) / 16;
    return kPermuted ? token_of_row(r) : r;
  });
}

// For a [64][64] tile in TMA's 128-byte swizzle (tma::sw128_offset): the swizzle moves 16-byte
// chunks within their 128-byte row, so the byte at off is in row off / 128.
template <int kT>
__device__ __forceinline__ void scale_rows_sw128(unsigned char* dst, const unsigned char* src, const float* coef,
                                                 int idx) {
  scale_rows<kT>(dst, src, coef, idx, [](int off) { return off >> 7; });
}

}  // namespace hlm::cuda::ssd
