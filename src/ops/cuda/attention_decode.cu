// Decode attention over a bf16 KV cache (see attention_decode.cuh): a split kernel that streams
// K and V once for all query heads of a KV head, and a combine kernel over the splits.
#include "ops/cuda/attention_decode.cuh"

#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda {

namespace {

using bf16_t = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f;

constexpr int kDecWarps = 4;
constexpr int kDecThreads = 32 * kDecWarps;
constexpr int kDecStep = 16;  // keys per warp step: the mma's M
constexpr int kDecMaxHeads = 8;  // query heads per block: the mma's N

struct DecodeArgs {
  DecodeProblem p;
  int G, groups, nsplit;
  float scale_log2;
  float* part_o;   // [B, Hq, nsplit, E]: Σ_keys 2^(s − m) v, unnormalised
  float* part_ml;  // [B, Hq, nsplit, 2]: m (log2 domain) and Σ 2^(s − m)
};

__device__ __forceinline__ uint32_t pack_pair(const bf16_t* p) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(p[0])) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(p[1])) << 16);
}

// Block (split, KV head × group of ≤ 8 query heads, b); its warps take 16-key steps of the split's
// range in turn. A step: lane (g = lane/4, q = lane%4) loads 16 bytes of K rows g and g+8 at
// e = (i·4 + q)·8 — directly the A fragments of m16n8k16 products S = K·Qᵀ (keys × heads), the same
// e permutation applied to the Q fragments held in registers (see gemm_own.cu's GEMV) — and 16
// bytes of V rows in plain row order (E/8 lanes per row). Online softmax on the score fragments
// (max and sum over the 8 lanes of a head by shuffles), P and the rescale factors handed to the V
// layout through shared memory, O += P·V with FMAs per (head, 8 columns). At the end the warps
// are merged in warp order and the block writes its split's (o, m, l) partials.
template <int E, int H>
__global__ void __launch_bounds__(kDecThreads) attn_decode_split_kernel(const DecodeArgs a) {
  constexpr int kKLoads = E / 32;                   // K: 16-byte loads per lane and row
  constexpr int kRowLanes = E / 8;                  // V: lanes per row
  constexpr int kRowsPerLoad = 32 / kRowLanes;      // V: rows per warp load
  constexpr int kVLoads = kDecStep / kRowsPerLoad;  // V: 16-byte loads per lane and step
  __shared__ float p_s[kDecWarps][kDecStep][kDecMaxHeads];
  __shared__ float alpha_s[kDecWarps][kDecMaxHeads];
  __shared__ float m_s[kDecWarps][kDecMaxHeads], l_s[kDecWarps][kDecMaxHeads];
  __shared__ float o_s[kDecWarps][H][E];

  const DecodeProblem& p = a.p;
  pdl_begin();  // PDL-launched (decode): q, the caches and the lengths come from earlier kernels
  const int t = static_cast<int>(threadIdx.x), lane = t & 31, warp = t >> 5;
  const int g = lane >> 2, qd = lane & 3;
  const int split = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.z);
  const int hk = static_cast<int>(blockIdx.y) / a.groups, grp = static_cast<int>(blockIdx.y) % a.groups;
  const int h0 = hk * a.G + grp * kDecMaxHeads;        // first query head of this block
  const int nh = min(kDecMaxHeads, a.G - grp * kDecMaxHeads);  // ≤ H

  // This split's keys: the live range [st, en) cut into nsplit chunks of whole steps.
  const int64_t st = max(p.start[b], 0), en = min(p.len[b], p.S);
  const int64_t n = max(en - st, int64_t{0});
  const int64_t chunk = ((n + a.nsplit - 1) / a.nsplit + kDecStep - 1) / kDecStep * kDecStep;
  const int64_t lo = st + split * chunk, hi = min(en, lo + chunk);

  // Q fragments (the mma's B): lane (g, q) holds head g at the K loads' e offsets.
  uint32_t qf[kKLoads][4];
  {
    const bool valid = g < nh;
    const bf16_t* qrow = static_cast<const bf16_t*>(p.q) + b * p.ldq + static_cast<int64_t>(h0 + (valid ? g : 0)) * E;
#pragma unroll
    for (int i = 0; i < kKLoads; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) qf[i][j] = valid ? pack_pair(qrow + (i * 4 + qd) * 8 + 2 * j) : 0u;
  }
  const bf16_t* kbase = static_cast<const bf16_t*>(p.k) + static_cast<int64_t>(b) * p.S * p.ldk + static_cast<int64_t>(hk) * E;
  const bf16_t* vbase = static_cast<const bf16_t*>(p.v) + static_cast<int64_t>(b) * p.S * p.ldv + static_cast<int64_t>(hk) * E;
  const int vc = lane % kRowLanes, vr = lane / kRowLanes;  // V layout: column chunk, first row

  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // heads 2q, 2q+1
  float acc[H][8];
#pragma unroll
  for (int h = 0; h < H; ++h)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.0f;

  for (int64_t k0 = lo + warp * kDecStep; k0 < hi; k0 += kDecWarps * kDecStep) {
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const bool va = k0 + g < hi, vb = k0 + g + 8 < hi;
    uint4 ka[kKLoads], kb[kKLoads], vv[kVLoads];
#pragma unroll
    for (int i = 0; i < kKLoads; ++i) {
      const int e = (i * 4 + qd) * 8;
      ka[i] = va ? load_stream16(kbase + (k0 + g) * p.ldk + e) : zero;
      kb[i] = vb ? load_stream16(kbase + (k0 + g + 8) * p.ldk + e) : zero;
    }
#pragma unroll
    for (int j = 0; j < kVLoads; ++j) {
      const int64_t r = k0 + vr + kRowsPerLoad * j;
      vv[j] = r < hi ? load_stream16(vbase + r * p.ldv + vc * 8) : zero;
    }
    // Scores C(key, head): c = (g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1).
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < kKLoads; ++i) {
      const uint32_t a0[4] = {ka[i].x, kb[i].x, ka[i].y, kb[i].y};
      mma::mma_bf16(c, a0, qf[i][0], qf[i][1]);
      const uint32_t a1[4] = {ka[i].z, kb[i].z, ka[i].w, kb[i].w};
      mma::mma_bf16(c, a1, qf[i][2], qf[i][3]);
    }
    const float s0 = va ? c[0] * a.scale_log2 : -INFINITY, s1 = va ? c[1] * a.scale_log2 : -INFINITY;
    const float s2 = vb ? c[2] * a.scale_log2 : -INFINITY, s3 = vb ? c[3] * a.scale_log2 : -INFINITY;
    float mx0 = fmaxf(s0, s2), mx1 = fmaxf(s1, s3);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o));
    }
    const float mn0 = fmaxf(m_run[0], mx0), mn1 = fmaxf(m_run[1], mx1);
    const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float p0 = exp2f(s0 - mu0), p1 = exp2f(s1 - mu1), p2 = exp2f(s2 - mu0), p3 = exp2f(s3 - mu1);
    float sum0 = p0 + p2, sum1 = p1 + p3;
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      sum0 += __shfl_xor_sync(0xffffffffu, sum0, o);
      sum1 += __shfl_xor_sync(0xffffffffu, sum1, o);
    }
    const float al0 = exp2f(m_run[0] - mu0), al1 = exp2f(m_run[1] - mu1);
    l_run[0] = l_run[0] * al0 + sum0;
    l_run[1] = l_run[1] * al1 + sum1;
    m_run[0] = mn0;
    m_run[1] = mn1;
    p_s[warp][g][2 * qd] = p0;
    p_s[warp][g][2 * qd + 1] = p1;
    p_s[warp][g + 8][2 * qd] = p2;
    p_s[warp][g + 8][2 * qd + 1] = p3;
    if (g == 0) {
      alpha_s[warp][2 * qd] = al0;
      alpha_s[warp][2 * qd + 1] = al1;
    }
    __syncwarp();
#pragma unroll
    for (int h = 0; h < H; ++h) {
      const float al = alpha_s[warp][h];
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] *= al;
    }
#pragma unroll
    for (int j = 0; j < kVLoads; ++j) {
      const int r = vr + kRowsPerLoad * j;
      const uint32_t w[4] = {vv[j].x, vv[j].y, vv[j].z, vv[j].w};
#pragma unroll
      for (int h = 0; h < H; ++h) {
        const float pw = p_s[warp][r][h];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          acc[h][2 * i] += pw * mma::bf16_lo(w[i]);
          acc[h][2 * i + 1] += pw * mma::bf16_hi(w[i]);
        }
      }
    }
    __syncwarp();  // p_s / alpha_s are rewritten by the next step
  }

  // Merge the lanes that share a column chunk (fixed butterfly), then the warps (warp order).
#pragma unroll
  for (int o = kRowLanes; o < 32; o <<= 1)
#pragma unroll
    for (int h = 0; h < H; ++h)
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], o);
  if (vr == 0) {
#pragma unroll
    for (int h = 0; h < H; ++h)
#pragma unroll
      for (int i = 0; i < 8; ++i) o_s[warp][h][vc * 8 + i] = acc[h][i];
  }
  if (g == 0) {
    m_s[warp][2 * qd] = m_run[0];
    m_s[warp][2 * qd + 1] = m_run[1];
    l_s[warp][2 * qd] = l_run[0];
    l_s[warp][2 * qd + 1] = l_run[1];
  }
  __syncthreads();
  const int64_t row0 = (static_cast<int64_t>(b) * p.Hq + h0) * a.nsplit + split;  // head h0's partial
  for (int idx = t; idx < nh * E; idx += kDecThreads) {
    const int h = idx / E, e = idx % E;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w) mx = fmaxf(mx, m_s[w][h]);
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w)
      if (m_s[w][h] != -INFINITY) o += o_s[w][h][e] * exp2f(m_s[w][h] - mx);
    a.part_o[(row0 + static_cast<int64_t>(h) * a.nsplit) * E + e] = o;
  }
  if (t < nh) {
    float mx = -INFINITY, l = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w) mx = fmaxf(mx, m_s[w][t]);
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w)
      if (m_s[w][t] != -INFINITY) l += l_s[w][t] * exp2f(m_s[w][t] - mx);
    a.part_ml[(row0 + static_cast<int64_t>(t) * a.nsplit) * 2] = mx;
    a.part_ml[(row0 + static_cast<int64_t>(t) * a.nsplit) * 2 + 1] = l;
  }
}

// out[b, h] = Σ_s 2^(m_s − M) o_s / Σ_s 2^(m_s − M) l_s: one block per (b, h); thread (split
// group, 4 columns) sums its splits, the groups are added in order. Rows with no keys give zeros.
template <int E>
__global__ void __launch_bounds__(256) attn_decode_combine_kernel(const float* part_o, const float* part_ml,
                                                                  int nsplit, int Hq, bf16_t* out, int64_t ldo) {
  constexpr int kLanes = E / 4, kGroups = 256 / kLanes;
  __shared__ float4 red_o[kGroups][kLanes];
  __shared__ float red_m[kGroups], red_l[kGroups];
  pdl_begin();
  const int bh = static_cast<int>(blockIdx.x), b = bh / Hq, h = bh % Hq;
  const int t = static_cast<int>(threadIdx.x), e4 = t % kLanes, sg = t / kLanes;
  const float* ml = part_ml + static_cast<int64_t>(bh) * nsplit * 2;
  float mx = -INFINITY;
  for (int s = sg; s < nsplit; s += kGroups) mx = fmaxf(mx, ml[2 * s]);
  if (e4 == 0) red_m[sg] = mx;
  __syncthreads();
  mx = -INFINITY;
#pragma unroll
  for (int i = 0; i < kGroups; ++i) mx = fmaxf(mx, red_m[i]);
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float l = 0.0f;
  const float4* po = reinterpret_cast<const float4*>(part_o) + static_cast<int64_t>(bh) * nsplit * kLanes;
  for (int s = sg; s < nsplit; s += kGroups) {
    const float m = ml[2 * s];
    if (m == -INFINITY) continue;
    const float w = exp2f(m - mx);
    l += ml[2 * s + 1] * w;
    const float4 v = po[static_cast<int64_t>(s) * kLanes + e4];
    o.x += v.x * w;
    o.y += v.y * w;
    o.z += v.z * w;
    o.w += v.w * w;
  }
  red_o[sg][e4] = o;
  if (e4 == 0) red_l[sg] = l;
  __syncthreads();
  if (sg != 0) return;
  float4 sum = red_o[0][e4];
  float lsum = red_l[0];
#pragma unroll
  for (int i = 1; i < kGroups; ++i) {
    sum.x += red_o[i][e4].x;
    sum.y += red_o[i][e4].y;
    sum.z += red_o[i][e4].z;
    sum.w += red_o[i][e4].w;
    lsum += red_l[i];
  }
  const float inv = lsum > 0.0f ? 1.0f / lsum : 0.0f;
  bf16_t* dst = out + b * ldo + static_cast<int64_t>(h) * E + e4 * 4;
  dst[0] = __float2bfloat16_rn(sum.x * inv);
  dst[1] = __float2bfloat16_rn(sum.y * inv);
  dst[2] = __float2bfloat16_rn(sum.z * inv);
  dst[3] = __float2bfloat16_rn(sum.w * inv);
}

// Blocks of one split kernel that fit on an SM at once (the grid is sized to one full wave).
template <typename Kernel>
int resident_blocks(Kernel kernel) {
#ifdef HLM_CUDA_EMU
  (void)kernel;
  return 3;
#else
  int n = 0;
  HLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kDecThreads, 0));
  return std::max(n, 1);
#endif
}

template <int E, int H>
void launch_decode(DecodeArgs& a) {
  const DecodeProblem& p = a.p;
  auto* split_kernel = attn_decode_split_kernel<E, H>;
  // Splits: enough blocks for one full wave over all SMs, at least one 16-key step per warp.
  const int64_t per_split = static_cast<int64_t>(p.B) * p.Hkv * a.groups;
  const int64_t slots = static_cast<int64_t>(resident_blocks(split_kernel)) * num_sms();
  const int64_t max_split = std::max<int64_t>(1, (p.S + kDecWarps * kDecStep - 1) / (kDecWarps * kDecStep));
  a.nsplit = static_cast<int>(std::clamp<int64_t>(slots / per_split, 1, std::min<int64_t>(max_split, 65535)));
  const size_t rows = static_cast<size_t>(p.B) * p.Hq * a.nsplit;
  a.part_o = scratch_as<float>(Scratch::Attn0, rows * E);
  a.part_ml = scratch_as<float>(Scratch::Attn1, rows * 2);
  const dim3 grid(static_cast<unsigned>(a.nsplit), static_cast<unsigned>(p.Hkv * a.groups),
                  static_cast<unsigned>(p.B));
  HLM_LAUNCH_PDL(split_kernel, grid, dim3(kDecThreads), 0, a);
  HLM_CUDA_CHECK_LAUNCH();
  HLM_LAUNCH_PDL(attn_decode_combine_kernel<E>, dim3(static_cast<unsigned>(p.B * p.Hq)), dim3(256), 0,
                 static_cast<const float*>(a.part_o), static_cast<const float*>(a.part_ml), a.nsplit, p.Hq,
                 static_cast<bf16_t*>(p.out), p.ldo);
  HLM_CUDA_CHECK_LAUNCH();
}

template <int E>
void launch_decode_e(DecodeArgs& a) {
  const int heads = std::min(a.G, kDecMaxHeads);
  if (heads <= 1) launch_decode<E, 1>(a);
  else if (heads <= 2) launch_decode<E, 2>(a);
  else if (heads <= 4) launch_decode<E, 4>(a);
  else launch_decode<E, 8>(a);
}

}  // namespace

void attention_decode_run(const DecodeProblem& p) {
  HLM_REQUIRE((p.E == 64 || p.E == 128) && p.Hkv > 0 && p.Hq % p.Hkv == 0, ErrorKind::Internal,
              "attention_decode_run: E={} Hq={} Hkv={}", p.E, p.Hq, p.Hkv);
  if (p.B == 0 || p.Hq == 0) return;
  DecodeArgs a{};
  a.p = p;
  a.G = p.Hq / p.Hkv;
  a.groups = (a.G + kDecMaxHeads - 1) / kDecMaxHeads;
  a.scale_log2 = p.scale * kLog2e;
  if (p.E == 64) launch_decode_e<64>(a);
  else launch_decode_e<128>(a);
}

}  // namespace hlm::cuda
