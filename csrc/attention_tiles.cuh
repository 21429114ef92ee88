// Attention tile bodies shared by the attention kernels (attention.cu) and the persistent
// action-expert kernel (expert_megakernel.cu): the parameter block, the mma.sync/ldmatrix
// helpers, one v2 tile (64 packed query rows x one key split) and one split-K combine
// item. Each body takes its block indices, thread index and barrier as arguments, so a
// plain kernel passes blockIdx/threadIdx/__syncthreads and the persistent kernel its task
// fields, its consumer-thread index and a named barrier over its consumer warps.
#pragma once

#include <cmath>

#include "common.h"

namespace flash_rt {
namespace attn_tiles {

constexpr int kBlockM = 64;   // rows per block: 4 warps x 16
constexpr int kWarps = 4;
constexpr float kLog2e = 1.4426950408889634f;

struct Params {
  const bf16* q; const bf16* k; const bf16* v;
  bf16* o;               // bf16 output, or nullptr when o8 is set
  fp8* o8;               // FP8 output (same element layout), quantised with *o_scale
  const float* o_scale;
  bool o8_via_bf16;      // FP8 output quantised from the bf16-rounded value (as a bf16
                         // attention output followed by a quantise kernel would be)
  int o8_chunk_rows;     // 0: FP8 output row-major (o_row, o_batch); R > 0: chunk-major for
                         // one batch of R rows, byte (t, col) at (col / 16) R 16 + t 16 + col % 16
                         // (the persistent kernel's activation layout; combine only)
  int Lq, Lk, H, Hkv, G, D;
  long long q_row, k_row, v_row, o_row, q_batch, k_batch, v_batch, o_batch;
  float scale;
  float scale_log2;  // scale * log2(e): v2 kernel works in the log2 domain
  const int* kv_len; int kv_len_add;
  int kv_len_value = -1; // >= 0: the valid length itself (batch 1), read by the caller once
                         // instead of kv_len[0] by every tile (the persistent kernel)
  const unsigned char* key_mask;
  int splits;
  float* ws_o;     // (splits, batch, H, Lq, D) fp32, split-K only
  float* ws_lse;   // (splits, batch, H, Lq)
  int batch;
};

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const int bytes = valid ? 16 : 0;  // 0 source bytes = zero fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
               "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// The keys one block reads: the valid length (device-side, clamped to Lk), this split's
// range of BN-key tiles, and the batch/KV-head base pointers. Shared by both kernels.
template <int BN>
struct KeySpan {
  int kv_len, blk_lo, blk_hi, kv_hi;
  const bf16* k;
  const bf16* v;
  const unsigned char* mask;
  __device__ __forceinline__ KeySpan(const Params& p, int b, int kvh, int split) {
    kv_len = p.Lk;
    if (p.kv_len_value >= 0) kv_len = min(max(p.kv_len_value + p.kv_len_add, 0), p.Lk);
    else if (p.kv_len) kv_len = min(max(p.kv_len[b] + p.kv_len_add, 0), p.Lk);
    const int n_blocks = (kv_len + BN - 1) / BN;
    const int per_split = (n_blocks + p.splits - 1) / p.splits;
    blk_lo = split * per_split;
    blk_hi = min(n_blocks, blk_lo + per_split);
    kv_hi = min(blk_hi * BN, kv_len);
    k = p.k + b * p.k_batch + (long long)kvh * p.D;
    v = p.v + b * p.v_batch + (long long)kvh * p.D;
    mask = p.key_mask ? p.key_mask + (long long)b * p.Lk : nullptr;
  }
};

// One output pair (columns col, col + 1 of a row) in the output's type: bf16, or FP8
// quantised with the dequantisation scale s (the next GEMM's static input scale). Used by
// the split-K combine only: FP8 output needs splits >= 2 (see attention()).
__device__ __forceinline__ void store_out_pair(const Params& p, long long off, float a, float b,
                                               float s) {
  if (p.o8 != nullptr) {
    if (p.o8_via_bf16) {
      a = __bfloat162float(__float2bfloat16_rn(a));
      b = __bfloat162float(__float2bfloat16_rn(b));
    }
    __nv_fp8x2_e4m3 t;
    t.__x = static_cast<__nv_fp8x2_storage_t>(
        (static_cast<unsigned>(to_fp8(b, s).__x) << 8) | to_fp8(a, s).__x);
    *reinterpret_cast<__nv_fp8x2_e4m3*>(p.o8 + off) = t;
  } else {
    *reinterpret_cast<__nv_bfloat162*>(p.o + off) = __floats2bfloat162_rn(a, b);
  }
}

// The split-K workspace row (of ws_o, D values; of ws_lse, one) of query (b, h, t) in split
// `split`: the layout store_rows writes and the combines read.
__device__ __forceinline__ long long ws_row(const Params& p, int split, int b, int h, int t) {
  return (((long long)split * p.batch + b) * p.H + h) * p.Lq + t;
}

// Writes one warp's two accumulator rows: the normalised bf16 output (splits == 1), or the
// fp32 partial output plus its natural-log lse (lse_of(r), for l > 0) for the split-K combine.
// (bf16 only: an FP8 branch here measured 27 % slower on the prefix, 68.6 vs 54.1 us.)
// The fragment holds DP columns from col0 (a warpgroup's half of the head dims in the
// persistent kernel's wgmma tile; 0 and all of them elsewhere).
// Bf16Part: the partial output in bf16 (half the bytes for the combine; the persistent
// kernel's FLASH_RT_MK_ATTN_BF16_PARTIALS), over the same ws_o buffer.
template <int DP, bool Bf16Part = false, typename LseOf>
__device__ __forceinline__ void store_rows(const Params& p, const float (&o)[DP / 8][4],
                                           const float (&l_run)[2], int m0, int qr, int rows,
                                           int kvh, int b, int split, int tig, LseOf lse_of,
                                           int col0 = 0) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int R = m0 + qr + r * 8;
    if (R >= rows) continue;
    const int t = R / p.G, h = kvh * p.G + R % p.G;
    const float inv = l_run[r] > 0.f ? 1.f / l_run[r] : 0.f;
    if (p.splits == 1) {
      bf16* dst = p.o + b * p.o_batch + t * p.o_row + (long long)h * p.D;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        const int col = col0 + i * 8 + 2 * tig;
        if (col < p.D) {
          *reinterpret_cast<__nv_bfloat162*>(dst + col) =
              __floats2bfloat162_rn(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
        }
      }
    } else {
      const long long prow = ws_row(p, split, b, h, t);
      float* dst = p.ws_o + prow * p.D;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
        const int col = col0 + i * 8 + 2 * tig;
        if (col < p.D) {
          if (Bf16Part)
            *reinterpret_cast<__nv_bfloat162*>(reinterpret_cast<bf16*>(p.ws_o) + prow * p.D + col) =
                __floats2bfloat162_rn(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
          else
            *reinterpret_cast<float2*>(dst + col) = make_float2(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
        }
      }
      if (tig == 0) p.ws_lse[prow] = l_run[r] > 0.f ? lse_of(r) : -INFINITY;
    }
  }
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                         unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  __nv_bfloat162 t = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&t);
}

__device__ __forceinline__ unsigned lds32(const bf16* p) {
  return *reinterpret_cast<const unsigned*>(p);
}

// Scales one warp's logits tile (NT n8 fragments, first key jb), sets keys past kv_hi to
// -inf and masked keys (masked(n, c, j): fragment n, column c of the pair, key j) to the
// finite mask constant, and returns the per-row maxima in mx.
template <int NT, typename Masked>
__device__ __forceinline__ void mask_scale_max_by(float (&s)[NT][4], float (&mx)[2], int jb,
                                                  int tig, float scale, int kv_hi,
                                                  Masked masked) {
  mx[0] = mx[1] = -INFINITY;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = jb + n * 8 + 2 * tig + (e & 1);
      float x = s[n][e] * scale;
      if (j >= kv_hi) x = -INFINITY;                  // not a key of this range
      else if (masked(n, e & 1, j)) x = kMaskValue;   // masked: finite constant
      s[n][e] = x;
      mx[e >> 1] = fmaxf(mx[e >> 1], x);
    }
  }
}

// The mask read from global memory as each key is scaled. Shared by both kernels (legacy:
// natural-log scale, v2: scale * log2 e).
template <int NT>
__device__ __forceinline__ void mask_scale_max(float (&s)[NT][4], float (&mx)[2], int jb, int tig,
                                               float scale, int kv_hi,
                                               const unsigned char* mask) {
  mask_scale_max_by(s, mx, jb, tig, scale, kv_hi,
                    [&](int, int, int j) { return mask && mask[j] == 0; });
}

// The key-mask bytes of one warp's logits tile (the keys mask_scale_max visits), loaded
// before the tile's K/V wait so their latency overlaps it; 1 where there is no mask or the
// key is past kv_hi (mask_scale_max_pre sets those to -inf anyway).
template <int NT>
__device__ __forceinline__ void load_mask_bytes(unsigned char (&mk)[NT][2], int jb, int tig,
                                                int kv_hi, const unsigned char* mask) {
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int j = jb + n * 8 + 2 * tig + c;
      mk[n][c] = (mask && j < kv_hi) ? mask[j] : static_cast<unsigned char>(1);
    }
  }
}

// mask_scale_max with the mask bytes already in registers (load_mask_bytes).
template <int NT>
__device__ __forceinline__ void mask_scale_max_pre(float (&s)[NT][4], float (&mx)[2], int jb,
                                                   int tig, float scale, int kv_hi,
                                                   const unsigned char (&mk)[NT][2]) {
  mask_scale_max_by(s, mx, jb, tig, scale, kv_hi,
                    [&](int n, int c, int) { return mk[n][c] == 0; });
}

// O *= alpha per accumulator row (online-softmax rescale).
template <int NI>
__device__ __forceinline__ void rescale_rows(float (&o)[NI][4], const float (&alpha)[2]) {
#pragma unroll
  for (int i = 0; i < NI; ++i) {
    o[i][0] *= alpha[0]; o[i][1] *= alpha[0];
    o[i][2] *= alpha[1]; o[i][3] *= alpha[1];
  }
}

// The A fragment of P for k16 step ks (probabilities as bf16 pairs).
template <int NT>
__device__ __forceinline__ void p_fragment(unsigned (&a)[4], const float (&s)[NT][4], int ks) {
  a[0] = pack_bf16(s[2 * ks][0], s[2 * ks][1]);
  a[1] = pack_bf16(s[2 * ks][2], s[2 * ks][3]);
  a[2] = pack_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
  a[3] = pack_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
}


// ---------------------------------------------------------------- v2 (default)
// Same math and contract as attn_kernel, restructured for throughput:
//  * WG warp groups of 4 warps: all groups share the 64 packed query rows, group g takes
//    keys [g*BN/WG, (g+1)*BN/WG) of every BN-key tile (intra-block split of the keys, so
//    one block of 64 rows keeps 8 warps busy; the groups' (m, l, O) merge at the end);
//  * STAGES-deep cp.async ring of K+V tiles (one commit group per tile, one barrier per
//    tile), prefetching STAGES-1 tiles ahead;
//  * Q fragments in registers (QREG) or one ldmatrix.x4 per k-step, K fragments by
//    ldmatrix.x4 (two 8-key n-tiles per instruction);
//  * softmax in the log2 domain: logits scaled once by scale*log2(e), exp2 per element.
//    Masked keys get kMaskValue there (weight exactly 0 next to any real key, uniform when
//    every key is masked: the reference's finite-mask semantics); keys past the length -inf.
template <int DP, int BN, int WG, int STAGES, bool QREG>
struct V2Cfg {
  static constexpr int kThreads = WG * 128;
  static constexpr int SD = DP + 8;  // padded smem row: conflict-free ldmatrix
  static constexpr int kMainBytes = (kBlockM + 2 * STAGES * BN) * SD * 2;
  // merge scratch: per extra group, per row-warp, DP/2 o values + 2 m + 2 l, x 32 lanes
  static constexpr int kRedBytes = (WG - 1) * 4 * (DP / 2 + 4) * 32 * 4;
  static constexpr int kSmem = kMainBytes > kRedBytes ? kMainBytes : kRedBytes;
  static constexpr int kOneTileMain = (kBlockM + 2 * BN) * SD * 2;
  static constexpr int kOneTileSmem = kOneTileMain > kRedBytes ? kOneTileMain : kRedBytes;
};

// Block barrier of a plain kernel (the persistent kernel passes a named barrier instead).
struct BlockSync {
  __device__ __forceinline__ static void sync() { __syncthreads(); }
};

// One v2 tile: packed query rows [m0, m0 + 64) of (batch b, kv head kvh) against key split
// `split`; thread `tid` of the C::kThreads that run it, `smem_raw` its C::kSmem bytes.
// When every split holds at most one BN-key tile, only stage 0 of the K/V ring is touched
// (kOneTileSmem bytes suffice). PREFETCH_MASK: load each tile's key-mask bytes before waiting
// for its K/V instead of inside the score loop (the persistent kernel, one tile per task,
// where that load was a round trip of its own; the kernel sequence keeps the old order
// until an A/B measures it there).
// Hooks: inputs_in() once the first tile's Q/K/V have landed, math_done() before the
// output is stored (the persistent kernel's per-task trace; NoHooks elsewhere).
// first_tile_preloaded(): the caller has already issued (and committed) the first key
// tile's K/V copies with v2_load_kv_tile, e.g. before waiting for Q (keys that are
// inputs of the persistent kernel's launch).
struct NoHooks {
  __device__ __forceinline__ void inputs_in() const {}
  __device__ __forceinline__ void math_done() const {}
  __device__ __forceinline__ bool first_tile_preloaded() const { return false; }
};

// K/V ring stage `st` of a v2 tile's shared memory <- key tile `blk` of `span`: NT threads
// issue cp.async copies (uncommitted); rows past span.kv_hi are zero-filled.
template <int DP, int BN, int NT>
__device__ __forceinline__ void v2_load_kv_tile(const Params& p, const KeySpan<BN>& span,
                                                unsigned char* smem_raw, int blk, int st,
                                                int tid) {
  constexpr int SD = DP + 8;  // V2Cfg::SD
  constexpr int kChunks = DP / 8;
  bf16* ks = reinterpret_cast<bf16*>(smem_raw) + kBlockM * SD + st * (2 * BN * SD);
  bf16* vs = ks + BN * SD;
  const int row0 = blk * BN;
  for (int i = tid; i < BN * kChunks; i += NT) {
    const int r = i / kChunks, c = i % kChunks;
    const bool ok = (row0 + r) < span.kv_hi && c * 8 < p.D;
    const long long ro = (long long)(row0 + r);
    cp_async16(ks + r * SD + c * 8, ok ? span.k + ro * p.k_row + c * 8 : span.k, ok);
    cp_async16(vs + r * SD + c * 8, ok ? span.v + ro * p.v_row + c * 8 : span.v, ok);
  }
}

template <int DP, int BN, int WG, int STAGES, bool QREG, typename Sync, bool PREFETCH_MASK = false,
          typename Hooks = NoHooks>
__device__ __forceinline__ void attn_v2_tile(const Params& p, unsigned char* smem_raw, int m0,
                                             int b, int kvh, int split, int tid,
                                             Hooks hooks = Hooks{}) {
  using C = V2Cfg<DP, BN, WG, STAGES, QREG>;
  constexpr int NT = C::kThreads;
  constexpr int SD = C::SD;
  constexpr int BNW = BN / WG;  // keys per warp per tile
  constexpr int KT = DP / 16;
  constexpr int kChunks = DP / 8;
  static_assert(BNW % 16 == 0 && STAGES >= 2, "tile shape");
  static_assert(SD == DP + 8, "v2_load_kv_tile's row pitch");
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* KVs = Qs + kBlockM * SD;  // stage st: K at KVs + st*2*BN*SD, V right after

  const int warp = tid >> 5, lane = tid & 31;
  const int rw = warp & 3, kg = warp >> 2;
  const int gid = lane >> 2, tig = lane & 3;
  const int rows = p.Lq * p.G;

  const KeySpan<BN> span(p, b, kvh, split);
  const int kv_len = span.kv_len, blk_lo = span.blk_lo, blk_hi = span.blk_hi, kv_hi = span.kv_hi;
  const unsigned char* mask = span.mask;

  for (int i = tid; i < kBlockM * kChunks; i += NT) {
    const int r = i / kChunks, c = i % kChunks;
    const int R = m0 + r;
    const int t = R / p.G, h = kvh * p.G + R % p.G;
    const bool ok = R < rows && c * 8 < p.D;
    const bf16* g = ok ? p.q + b * p.q_batch + t * p.q_row + (long long)h * p.D + c * 8 : p.q;
    cp_async16(Qs + r * SD + c * 8, g, ok);
  }
  auto load_tile = [&](int blk, int st) {
    v2_load_kv_tile<DP, BN, NT>(p, span, smem_raw, blk, st, tid);
  };
  const bool preloaded = hooks.first_tile_preloaded();
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {  // group st = tile blk_lo + st (group 0 has Q)
    if (blk_lo + st < blk_hi && !(st == 0 && preloaded)) load_tile(blk_lo + st, st);
    cp_async_commit();
  }

  // ldmatrix lane addressing: A (Q, 16x16 row-major) and B (K rows = keys, non-trans)
  const int a_row = ((lane >> 3) & 1) * 8 + (lane & 7), a_col = (lane >> 4) * 8;
  const int b_row = (lane >> 4) * 8 + (lane & 7), b_col = ((lane >> 3) & 1) * 8;
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = (lane >> 4) * 8;
  const bf16* qw = Qs + (rw * 16 + a_row) * SD + a_col;

  unsigned qf[QREG ? KT : 1][4];
  if (QREG) {
    cp_async_wait<STAGES - 2>();  // group 0 (Q + first tile) landed
    Sync::sync();
#pragma unroll
    for (int kk = 0; kk < (QREG ? KT : 1); ++kk) ldmatrix_x4(qf[kk], qw + kk * 16);
  }

  float o[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};

  int it = 0;
  for (int blk = blk_lo; blk < blk_hi; ++blk, ++it) {
    const int jb = blk * BN + kg * BNW;
    unsigned char mk[PREFETCH_MASK ? BNW / 8 : 1][2];
    if constexpr (PREFETCH_MASK) load_mask_bytes(mk, jb, tig, kv_hi, mask);  // lands with the tile
    cp_async_wait<STAGES - 2>();
    Sync::sync();  // tile `it` visible to all; everyone is done with tile it-1's buffer
    if (it == 0) hooks.inputs_in();
    {
      const int nb = blk + STAGES - 1;
      if (nb < blk_hi) load_tile(nb, (it + STAGES - 1) % STAGES);
      cp_async_commit();
    }
    const bf16* Ks = KVs + (it % STAGES) * (2 * BN * SD) + kg * BNW * SD;
    const bf16* Vs = Ks + BN * SD;

    float s[BNW / 8][4];
#pragma unroll
    for (int n = 0; n < BNW / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      unsigned a[4];
      if (QREG) {
        a[0] = qf[QREG ? kk : 0][0]; a[1] = qf[QREG ? kk : 0][1];
        a[2] = qf[QREG ? kk : 0][2]; a[3] = qf[QREG ? kk : 0][3];
      } else {
        ldmatrix_x4(a, qw + kk * 16);
      }
#pragma unroll
      for (int np = 0; np < BNW / 16; ++np) {
        unsigned bk[4];
        ldmatrix_x4(bk, Ks + (np * 16 + b_row) * SD + kk * 16 + b_col);
        mma_bf16(s[2 * np], a, bk[0], bk[1]);
        mma_bf16(s[2 * np + 1], a, bk[2], bk[3]);
      }
    }

    float mx[2];
    if constexpr (PREFETCH_MASK) mask_scale_max_pre(s, mx, jb, tig, p.scale_log2, kv_hi, mk);
    else mask_scale_max(s, mx, jb, tig, p.scale_log2, kv_hi, mask);
    float alpha[2], m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);
      // -inf only while this warp has seen no key of the range at all (its key slice of
      // the tile may lie wholly past the length): keep everything 0, never NaN.
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = exp2f(m_run[r] - m_use[r]);
      m_run[r] = m_new;
      l_run[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < BNW / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f(s[n][e] - m_use[e >> 1]);
        s[n][e] = pe;
        l_run[e >> 1] += pe;
      }
    }
    rescale_rows(o, alpha);
#pragma unroll
    for (int ks = 0; ks < BNW / 16; ++ks) {
      unsigned a[4];
      p_fragment(a, s, ks);
      const bf16* vp = Vs + (ks * 16 + v_row) * SD + v_col;
#pragma unroll
      for (int np = 0; np < DP / 16; ++np) {
        unsigned bfr[4];
        ldmatrix_x4_trans(bfr, vp + np * 16);
        mma_bf16(o[2 * np], a, bfr[0], bfr[1]);
        mma_bf16(o[2 * np + 1], a, bfr[2], bfr[3]);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }

  if (WG > 1) {
    // Merge the key groups' partial (m, l, O) into group 0 through shared memory
    // (layout [group-1][row-warp][value][lane]: conflict-free, no index math per row).
    constexpr int NV = DP / 2 + 4;
    float* red = reinterpret_cast<float*>(smem_raw);
    Sync::sync();  // every warp is done with the K/V/Q tiles
    if (kg > 0) {
      float* dst = red + ((kg - 1) * 4 + rw) * NV * 32 + lane;
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[(i * 4 + e) * 32] = o[i][e];
      }
      dst[(DP / 2 + 0) * 32] = m_run[0];
      dst[(DP / 2 + 1) * 32] = m_run[1];
      dst[(DP / 2 + 2) * 32] = l_run[0];
      dst[(DP / 2 + 3) * 32] = l_run[1];
    }
    Sync::sync();
    if (kg > 0) return;
#pragma unroll
    for (int g = 1; g < WG; ++g) {
      const float* src = red + ((g - 1) * 4 + rw) * NV * 32 + lane;
      float f_self[2], f_other[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float mo = src[(DP / 2 + r) * 32], lo = src[(DP / 2 + 2 + r) * 32];
        const float m_new = fmaxf(m_run[r], mo);
        const float mu = m_new == -INFINITY ? 0.f : m_new;
        f_self[r] = exp2f(m_run[r] - mu);
        f_other[r] = exp2f(mo - mu);
        l_run[r] = l_run[r] * f_self[r] + lo * f_other[r];
        m_run[r] = m_new;
      }
#pragma unroll
      for (int i = 0; i < DP / 8; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          o[i][e] = o[i][e] * f_self[e >> 1] + src[(i * 4 + e) * 32] * f_other[e >> 1];
      }
    }
  }

  const int qr = rw * 16 + gid;
  hooks.math_done();
  // m_run is in the log2 domain here; the combine kernel works in natural-log units.
  store_rows<DP>(p, o, l_run, m0, qr, rows, kvh, b, split, tig,
                 [&](int r) { return (m_run[r] + log2f(l_run[r])) * 0.6931471805599453f; });
}

// Split-K merge. One thread per item = (output row, COLS columns, 8 or 4): every split's
// lse and, BATCH splits at a time (default 8), their partial columns are loaded before any
// is used, so a row costs a memory round trip per BATCH splits instead of one per split.
// Weights exp(lse_s - max lse); empty splits carry lse = -inf and zero partials. Writes
// bf16 or FP8 (store_out_pair). Partials are read through L2 (__ldcg): the persistent kernel
// re-reads the same workspace every layer, written by other blocks. COLS = 4 (the
// persistent kernel): one float4 a split, so a warp's load covers 512 contiguous bytes;
// with 8 columns a lane's two float4 halves fall in two instructions that each touch every
// sector of a 1 KiB span (twice the L2 sector traffic), and half as many items (tasks).
// Bf16Part: the partials were stored in bf16 (store_rows<DP, true>; COLS 4: 8 bytes a split).
template <int MAXS, int BATCH = (MAXS < 8 ? MAXS : 8), int COLS = 8, bool Bf16Part = false>
__device__ __forceinline__ void attn_combine_item(const Params& p, long long item) {
  static_assert(COLS == 8 || COLS == 4, "an item is 8 or 4 columns");
  static_assert(!Bf16Part || COLS == 4, "bf16 partials: 4 columns an item");
  constexpr int kVecs = COLS / 4;  // float4 loads per split
  const int chunks = p.D / COLS;
  const long long total = (long long)p.batch * p.H * p.Lq;
  const long long row = item / chunks;
  if (row >= total) return;
  const int c = static_cast<int>(item % chunks);
  const int t = static_cast<int>(row % p.Lq), h = static_cast<int>((row / p.Lq) % p.H);
  const int b = static_cast<int>(row / ((long long)p.Lq * p.H));
  // Loads are unconditional (split index clamped to the last real split, the extras get
  // weight 0) and batched ahead of their use: a load under a per-split branch followed by
  // its FMA measured one memory round trip per split (6.6 us for 16 splits on the H100).
  const int last = p.splits - 1;
  const float sc = p.o_scale ? *p.o_scale : 1.f;
  float lse[MAXS];
#pragma unroll
  for (int s = 0; s < MAXS; ++s) lse[s] = __ldcg(p.ws_lse + min(s, last) * total + row);
  float mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < MAXS; ++s) mx = fmaxf(mx, s <= last ? lse[s] : -INFINITY);
  float acc[COLS];
#pragma unroll
  for (int i = 0; i < COLS; ++i) acc[i] = 0.f;
  float wsum = 0.f;
  constexpr int kBatch = BATCH;
  static_assert(BATCH >= 1 && BATCH <= MAXS && MAXS % BATCH == 0, "BATCH divides MAXS");
#pragma unroll
  for (int s0 = 0; s0 < MAXS; s0 += kBatch) {
    if (s0 > last) break;  // uniform over the grid
    float4 x[kBatch][kVecs];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const long long at = (min(s0 + j, last) * total + row) * p.D + COLS * c;
      if (Bf16Part) {
        const uint2 u = __ldcg(reinterpret_cast<const uint2*>(reinterpret_cast<const bf16*>(p.ws_o) + at));
        const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
        const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
        x[j][0] = make_float4(lo.x, lo.y, hi.x, hi.y);
      } else {
        const float4* src = reinterpret_cast<const float4*>(p.ws_o + at);
#pragma unroll
        for (int v = 0; v < kVecs; ++v) x[j][v] = __ldcg(src + v);
      }
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int s = s0 + j;
      const float w = (s > last || lse[s] == -INFINITY) ? 0.f : __expf(lse[s] - mx);
      wsum += w;
#pragma unroll
      for (int v = 0; v < kVecs; ++v) {
        acc[4 * v] += w * x[j][v].x; acc[4 * v + 1] += w * x[j][v].y;
        acc[4 * v + 2] += w * x[j][v].z; acc[4 * v + 3] += w * x[j][v].w;
      }
    }
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  const long long col = (long long)h * p.D + COLS * c;  // inside one 16-byte FP8 chunk
  const long long off = p.o8_chunk_rows > 0
                            ? (col >> 4) * p.o8_chunk_rows * 16 + t * 16 + (col & 15)
                            : b * p.o_batch + t * p.o_row + col;
#pragma unroll
  for (int i = 0; i < COLS; i += 2) store_out_pair(p, off + i, acc[i] * inv, acc[i + 1] * inv, sc);
}


}  // namespace attn_tiles
}  // namespace flash_rt
