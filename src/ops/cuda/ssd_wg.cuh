// Shared pieces of the wgmma SSD kernels (ssd_fwd_wg.cu, ssd_bwd_wg.cu; sm_90a, Q = P = 64): the
// token order of the product rows that balances the causal work over a warpgroup's warps, and the
// cp.async loader of 8 x 8 core-matrix tiles (wgmma.cuh's CoreTile).
#pragma once

#include <cstdint>
#include <type_traits>

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

// Queues cp.async copies of rows [row0, row0 + R) x columns [0, C) of a bf16 row view into a
// CoreTile<R, C>; rows >= valid_rows are zero-filled. Thread idx of kT copies the 16-byte pieces
// idx, idx + kT, ... of the tile in its shared-memory order (8 rows of one 8-column block, then
// the next column block, then the next 8 rows): each 8 lanes of a warp fill one 128-byte core
// matrix (no bank conflict) from 8 rows, and the 4 groups of a warp take 4 neighbouring column
// blocks, so each row's 64 bytes are whole sectors read by one instruction. (Lanes along a row
// wrote 8 core matrices 128 bytes apart: an 8-way conflict, and ncu counted twice the ideal L2
// sectors for every such copy.) kUnroll: how far the loop is unrolled (a producer warp keeps few
// registers). With kPermute (R = Q), token r goes to row row_of_token(r) (an aligned 8-token group
// lands in one core matrix, possibly in reverse row order).
template <int R, int C, int kT, int kUnroll, bool kPermute = false>
__device__ __forceinline__ void load_core_tile_async(unsigned char* S, const bf16_t* base, int64_t ld, int64_t row0,
                                                     int valid_rows, int idx) {
  using Tile = wg::CoreTile<R, C>;
  constexpr int kPieces = C / 8, kSteps = R * kPieces / kT, kGroups = kT / 8;  // groups of 8 rows per step
  static_assert(kT % 8 == 0 && (R * kPieces) % kT == 0 && (kGroups % kPieces == 0 || kPieces % kGroups == 0),
                "whole core matrices per step");
  const int rr = idx & 7, j0 = idx >> 3;  // row within the core matrix; first core matrix (tile order)
  const bf16_t* first = base + row0 * ld;  // a valid row for the zero-filled ones
  const bf16_t* src0 = first + rr * ld;
  // A whole tile (every chunk but a row's last) takes the plain copy; a partial one zero-fills.
  auto copies = [&](auto whole) {
#pragma unroll kUnroll
    for (int k = 0; k < kSteps; ++k) {
      // Core matrix j = j0 + k kGroups: column block j % kPieces, rows 8 (j / kPieces) + rr. Either
      // the column block is the thread's own for every step (kGroups a multiple of kPieces), or j0 <
      // kGroups divides kPieces and the split is static in k.
#ifdef HLM_SSD_COPY_BY_ROW  // TEMPORARY A/B: the earlier order (lanes along a row)
      const int c = idx % kPieces, r = idx / kPieces + k * (kT / kPieces);
      unsigned char* d = S + Tile::offset(kPermute ? row_of_token(r) : r, 8 * c);
      const bf16_t* src = first + r * ld + 8 * c;
      (void)src0, (void)j0, (void)rr;
#else
      int c, rg;
      if constexpr (kGroups % kPieces == 0) {
        c = j0 % kPieces;
        rg = j0 / kPieces + k * (kGroups / kPieces);
      } else {
        c = j0 + kGroups * (k % (kPieces / kGroups));
        rg = k / (kPieces / kGroups);
      }
      const int r = 8 * rg + rr;
      unsigned char* d = kPermute ? S + Tile::offset(row_of_token(r), 8 * c) : S + (idx + k * kT) * 16;
      const bf16_t* src = src0 + int64_t{8 * rg} * ld + 8 * c;
#endif
      if constexpr (decltype(whole)::value) {
        mma::cp_async16(d, src);
      } else {
        const bool valid = r < valid_rows;
        mma::cp_async16(d, valid ? src : first, valid);
      }
    }
  };
  if (valid_rows >= R)
    copies(std::true_type{});
  else
    copies(std::false_type{});
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

// dst[r][:] = bf16(src[r][:] coef[token of row r]) for a CoreTile<64, 64> (rows permuted by
// token_of_row() if kPermuted; the activation tiles x, dy), by kT threads (this one idx), 16
// contiguous bytes per thread and step; src and dst share the layout. Rounded as every SSD kernel
// rounds x w dt: bf16 of the bf16 element times the fp32 coefficient. The caller fences for the
// async proxy.
template <int kT, bool kPermuted>
__device__ __forceinline__ void scale_rows_core(unsigned char* dst, const unsigned char* src, const float* coef,
                                                int idx) {
  using TX = wg::CoreTile<64, 64>;
  constexpr int kSteps = TX::kBytes / 16 / kT;
  uint4 u[kSteps];
#pragma unroll
  for (int k = 0; k < kSteps; ++k) u[k] = *reinterpret_cast<const uint4*>(src + (idx + k * kT) * 16);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    const int off = (idx + k * kT) * 16;
    // byte offset -> row: (r / 8) row groups, then (r % 8) 16-byte rows in a core matrix
    const int r = off / TX::kRowGroup * 8 + (off % 128) / 16;
    const float sc = coef[kPermuted ? token_of_row(r) : r];
    uint32_t v[4] = {u[k].x, u[k].y, u[k].z, u[k].w};
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = mma::pack_bf16x2(mma::bf16_lo(v[e]) * sc, mma::bf16_hi(v[e]) * sc);
    *reinterpret_cast<uint4*>(dst + off) = make_uint4(v[0], v[1], v[2], v[3]);
  }
}

}  // namespace hlm::cuda::ssd
