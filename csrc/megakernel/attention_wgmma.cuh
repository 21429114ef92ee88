// The persistent kernel's decoder-attention tile on the warpgroup MMA (the default since
// run 11; FLASH_RT_MK_WGMMA_ATTENTION=0 restores attn_tiles::attn_v2_tile for an A/B). It
// replaces that tile in the kernel only; the attention kernels of attention.cu keep mma.sync.
//
// Why: run 10 on the H100 measured the v2 tile's math at 2.9-3.4 us for one 64 x 64 x 256
// tile, about five times its tensor-core work: with mma.sync every warp re-reads its Q and
// K slices through ldmatrix (~256 KiB of shared-memory reads a tile), and the two key
// groups merge 64 KiB of partial outputs through shared memory. Here both products read
// their operands once, by descriptor, and the groups exchange only row maxima and sums:
//   logits   warpgroup g: S_g (64 x 32) = Q (64 x 256) K[32 g, 32 g + 32)^T, m64n32k16 x 16;
//   softmax  row maxima over both groups (shared memory, one barrier), P = exp2(S - m) as
//            bf16 into shared memory (over Q, dead by then), row sums exchanged the same way;
//   output   warpgroup g: O[:, 128 g, 128 g + 128) = P (64 x 64) V[:, 128 g ...),
//            m64n128k16 x 4, B = V as stored (rows = keys, MN-major: imm-trans-b).
// Same contract as the v2 tile with one key tile per split (the kernel's launcher checks
// splits * 64 >= cache rows): the same masking (attn_tiles::mask_scale_max_pre), the same
// log2-domain softmax, fp32 partials and a natural-log lse per row for the combine. The
// difference is rounding only: P is rounded to bf16 against the tile's row maximum instead
// of each key group's own.
//
// Shared memory (the kernel's `work` area): Q, K and V as 64 rows x 32 chunks of 8 bf16,
// each placed by the tile's operand layout (below): one placement serves as the K-major
// operand for Q and K and as the MN-major one for V; see arch_sm90.cuh.
#pragma once

#include <climits>
#include <type_traits>

#include "../attention_tiles.cuh"
#include "arch_sm90.cuh"

#ifndef FLASH_RT_MK_WGMMA_ATTENTION
#define FLASH_RT_MK_WGMMA_ATTENTION 1
#endif
// FLASH_RT_MK_ATTN_SWIZZLE (default 1): Q, K and V in the 128-byte swizzled operand layout
// (Swizzled128); 0: the interleaved one. Run 12 on the H100 (docs/performance.md): one step
// 654 vs 701 us at 2 views h50 (the tile's inputs 1.62 vs 2.69 us), 540 vs 545 at 1 view
// h10, 556 vs 566 at 3 views h10, every output identical to 6 digits of cosine.
#ifndef FLASH_RT_MK_ATTN_SWIZZLE
#define FLASH_RT_MK_ATTN_SWIZZLE 1
#endif

namespace flash_rt {
namespace mk {
namespace wg_attn {

constexpr bool kEnabled = FLASH_RT_MK_WGMMA_ATTENTION != 0;
constexpr int kRows = attn_tiles::kBlockM;   // packed query rows of a tile
constexpr int kKeys = 64;                    // keys of a split (one tile)
constexpr int kDim = 256;                    // head dim
constexpr int kChunks = kDim / 8;            // 16-byte chunks of a row
constexpr int kTileBytes = kRows * kDim * 2;
constexpr int kQ = 0, kK = kTileBytes, kV = 2 * kTileBytes;
constexpr int kP = kQ;                       // P (64 x 64 bf16) over Q once the logits are done
constexpr int kRed = 3 * kTileBytes;         // row maxima [2][64], then row sums [2][64] (fp32)
constexpr int kBytes = kRed + 4 * kRows * 4;
constexpr int kGroupKeys = kKeys / 2;        // logits columns of a warpgroup
constexpr int kGroupDims = kDim / 2;         // output columns of a warpgroup
static_assert(kRows == kKeys, "Q, K and V tiles share one placement (64 rows)");

// The interleaved (no-swizzle) placement: chunk (row r, c) at c * 1024 + r * 16. K-major
// for Q and K: LBO 1024 along K (head dims), SBO 128 along rows; MN-major for V: SBO 1024
// along N (head dims), LBO 128 along K (keys). Copy slot i: 4 consecutive chunks of 8
// consecutive rows per warp, so a warp writes 4 runs of 128 bytes (no bank conflicts
// beyond the 4 wavefronts 512 bytes take) but reads 8 runs of 64 bytes (8 lines).
struct Interleaved {
  static constexpr int kChunkStride = kRows * 16;
  __device__ __forceinline__ static int offset(int row, int chunk) {
    return chunk * kChunkStride + row * 16;
  }
  __device__ __forceinline__ static void slot(int i, int& row, int& chunk) {
    const int rest = i >> 5;
    chunk = (rest % (kChunks / 4)) * 4 + (i & 3);
    row = (rest / (kChunks / 4)) * 8 + ((i >> 2) & 7);
  }
  // Q or K rows [row0, row0 + 8 m) x head dims [16 kk, 16 kk + 16)
  __device__ __forceinline__ static uint64_t desc_k_major(const unsigned char* t, int row0,
                                                          int kk) {
    return make_desc(t + 2 * kk * kChunkStride + row0 * 16, kChunkStride, 128);
  }
  // V keys [16 ks, 16 ks + 16) x head dims [8 c0, ...)
  __device__ __forceinline__ static uint64_t desc_mn_major(const unsigned char* t, int ks,
                                                           int c0) {
    return make_desc(t + c0 * kChunkStride + ks * 256, 128, kChunkStride);
  }
};

// The 128-byte swizzled placement: head dims in atoms of 64 (128 bytes a row), an atom 8
// rows x 128 bytes = 1 KiB with chunk j of row r at j ^ (r % 8); atoms of one 64-dim slice
// follow each other by 8-row groups (SBO 1024), slices 8 KiB apart. K-major for Q and K (a
// k16 step moves 32 bytes inside the row; LBO unused), MN-major for V (LBO 8 KiB between
// 64-dim slices, SBO 1 KiB between 8-key groups). Copy slot i: one row per warp, so a warp
// reads one 512-byte row (4 lines) and writes it in 4 wavefronts (the XOR spreads its 8
// chunks of each atom over all banks).
struct Swizzled128 {
  static constexpr int kAtomBytes = 1024, kSliceBytes = kRows / 8 * kAtomBytes;
  __device__ __forceinline__ static int offset(int row, int chunk) {
    return (chunk >> 3) * kSliceBytes + (row >> 3) * kAtomBytes + (row & 7) * 128 +
           (((chunk & 7) ^ (row & 7)) << 4);
  }
  __device__ __forceinline__ static void slot(int i, int& row, int& chunk) {
    row = i / kChunks;
    chunk = i % kChunks;
  }
  __device__ __forceinline__ static uint64_t desc_k_major(const unsigned char* t, int row0,
                                                          int kk) {
    return make_desc(t + (kk >> 2) * kSliceBytes + (row0 >> 3) * kAtomBytes + (kk & 3) * 32, 16,
                     kAtomBytes, kSwizzle128B);
  }
  __device__ __forceinline__ static uint64_t desc_mn_major(const unsigned char* t, int ks,
                                                           int c0) {
    return make_desc(t + (c0 >> 3) * kSliceBytes + ks * 2 * kAtomBytes, kSliceBytes, kAtomBytes,
                     kSwizzle128B);
  }
};

using Layout = std::conditional_t<FLASH_RT_MK_ATTN_SWIZZLE != 0, Swizzled128, Interleaved>;

// FLASH_RT_MK_ATTN_PARTIAL_PREFETCH=1 (build switch for an A/B; off: measured slower in run
// 12 on the H100, 706 vs 701 us a step at 2 views h50, 553 vs 545 at 1 view h10): the
// split holding the step's own K/V rows (keys from valid_len on, written by this layer's
// QKV tasks) also issues its rows before valid_len ahead of the task's wait, and only the
// rest after it; off, that split loads all 64 rows after the wait. At horizon 10 the split
// holds ~54 cached rows and 10 of the step's.
#ifndef FLASH_RT_MK_ATTN_PARTIAL_PREFETCH
#define FLASH_RT_MK_ATTN_PARTIAL_PREFETCH 0
#endif
constexpr bool kPartialPrefetch = FLASH_RT_MK_ATTN_PARTIAL_PREFETCH != 0;

// FLASH_RT_MK_ATTN_BF16_PARTIALS=1 (build switch for an A/B): each split's normalised
// partial output is stored in bf16 instead of fp32 and the combine reads it so: half the
// bytes of the tile's partial stores (1.6 us of a 2-view h50 attention task, run 11) and of
// the combine's loads. The combined output is quantised to FP8 for O anyway (3 mantissa
// bits against bf16's 8). Measured in run 13 (H100): slower, 672 vs 648 us a step at 2
// views h50 (the tile's stores 1.71 -> 2.47 us, the combine 2.78 -> 2.33). Kept off.
#ifndef FLASH_RT_MK_ATTN_BF16_PARTIALS
#define FLASH_RT_MK_ATTN_BF16_PARTIALS 0
#endif
constexpr bool kBf16Partials = FLASH_RT_MK_ATTN_BF16_PARTIALS != 0;

// FLASH_RT_MK_ATTN_STAGED_STORE=1 (build switch, default 0: measured slower): the tile's fp32
// partial output goes through shared memory (over Q, K and V, dead once both products are
// done) and out as 16-byte stores, a warp writing 512 contiguous bytes of one output row,
// instead of one 8-byte store per fragment pair, a warp instruction touching 8 rows
// (packed query rows are heads of one token: their partial rows lie Lq rows apart). Why:
// the tile's partial stores are 1.7 us of a 5.4 us attention task at 2 views h50 (run 13
// on the H100), the QKV epilogue's staging did the same for its scattered stores (run 11:
// one step 706 -> 693 us). Same values; splits > 1 with fp32 partials only. Measured (H200,
// 2026-12-07, docs/performance.md): slower, the tile's epilogue 1.7 -> 3.2 us at 2 views h50
// (631.7 -> 666.6 us a step; 1 view h10 525.3 -> 551.5): the staging's two block barriers
// and shared-memory round trip cost more than the wider stores save.
#ifndef FLASH_RT_MK_ATTN_STAGED_STORE
#define FLASH_RT_MK_ATTN_STAGED_STORE 0
#endif
constexpr bool kStagedStore = FLASH_RT_MK_ATTN_STAGED_STORE != 0;
// FLASH_RT_MK_ATTN_Q_TMA (build switch, default 1 since run 19; 0: cp.async after the
// wait): the tile's Q rows (64 packed rows x 256 dims, written by this layer's QKV tasks,
// so loaded after the wait) arrive as four TMA boxes of 64 rows x 64 dims, the map's
// 128-byte swizzle being Swizzled128's, issued by thread 0 on the block's bulk-load
// barrier, instead of 8 cp.async of 16 bytes a thread. Why: a cached split's inputs (its
// K/V tile prefetched before the wait, so mostly Q) were 1.5 us of the attention task at 2
// views h50 (run 15), where a GEMM task's 16-64 KB activation tile arrives by one bulk copy
// in 0.55-0.72 us. Measured (H100, run 19, docs/performance.md): the attention phase 6.39
// -> 5.29 us (inputs 1.58 -> 0.82), a step 613.6 -> 597.0 us at 2 views h50 and 503.6 ->
// 492.7 at 1 view h10, outputs as the default's. The wgmma tile in the swizzled layout
// only: with FLASH_RT_MK_ATTN_SWIZZLE=0 or FLASH_RT_MK_WGMMA_ATTENTION=0 Q goes by cp.async.
#ifndef FLASH_RT_MK_ATTN_Q_TMA
#define FLASH_RT_MK_ATTN_Q_TMA 1
#endif
constexpr bool kQTma =
    FLASH_RT_MK_ATTN_Q_TMA != 0 && FLASH_RT_MK_ATTN_SWIZZLE != 0 && FLASH_RT_MK_WGMMA_ATTENTION != 0;
// FLASH_RT_MK_ATTN_KV_TMA=1 (build switch for an A/B): likewise the K and V tile of the
// split holding the step's own rows (loaded after the wait: that split is the phase's
// straggler, inputs 2.1 against 1.5 us, run 15), eight boxes on the same barrier. Rows past
// the valid keys read what the cache holds there (finite: zeros or earlier keys) instead
// of zeros; their logits are -inf either way. The prefix splits keep their cp.async
// prefetch before the wait. Not kept (H100, run 19): 616.7 vs 613.6 us a step at 2 views
// h50, 512.9 vs 503.6 at 1 view h10; with Q by TMA as well 603.1 / 504.4, slower than Q
// alone (597.0 / 492.7).
#ifndef FLASH_RT_MK_ATTN_KV_TMA
#define FLASH_RT_MK_ATTN_KV_TMA 0
#endif
constexpr bool kKvTma = FLASH_RT_MK_ATTN_KV_TMA != 0;
static_assert(!kKvTma || (FLASH_RT_MK_ATTN_SWIZZLE && FLASH_RT_MK_WGMMA_ATTENTION),
              "the TMA boxes land in the wgmma tile's swizzled layout");
static_assert(!(kKvTma && FLASH_RT_MK_ATTN_PARTIAL_PREFETCH),
              "the own split's K/V by TMA or by a partial prefetch, not both");
constexpr int kQBoxDims = 64;  // a box's inner extent: 128 bytes of bf16, the swizzle span

// A staged row: the head dims and 8 floats of padding, so that the 8 rows of a fragment
// store start 32 bytes apart in the banks (two wavefronts a warp store, not eight).
constexpr int kStageRow = kDim + 8;
static_assert(kRows * kStageRow * 4 <= kRed, "the staged partials fit over Q, K and V");

// The tile's normalised partial output (o: a warpgroup's kGroupDims columns from col0 of
// rows r0, r0 + 8) and lse values (lse_of) into split `split`'s rows of ws_o / ws_lse, as
// attn_tiles::store_rows (batch 1, one KV head), staged through `work` (kStagedStore).
template <int NT, typename Sync, typename LseOf>
__device__ __forceinline__ void store_partials_staged(const attn_tiles::Params& p,
                                                      const float (&o)[kGroupDims / 8][4],
                                                      const float (&l)[2], int m0, int r0,
                                                      int rows, int split, int col0, int tig,
                                                      int tid, unsigned char* work, LseOf lse_of) {
  constexpr int kVecs = kDim / 4;  // 16-byte pieces of a row
  float* stage = reinterpret_cast<float*>(work);
  // packed query row R's workspace row (store_rows' with b = 0, kvh = 0)
  const auto prow = [&](int R) { return attn_tiles::ws_row(p, split, 0, R % p.G, R / p.G); };
  Sync::sync();  // both warpgroups' P V products are done: P, K and V are dead
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r0 + 8 * r;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
    for (int i = 0; i < kGroupDims / 8; ++i)
      *reinterpret_cast<float2*>(stage + row * kStageRow + col0 + i * 8 + 2 * tig) =
          make_float2(o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
    if (tig == 0 && col0 == 0 && m0 + row < rows)
      p.ws_lse[prow(m0 + row)] = l[r] > 0.f ? lse_of(r) : -INFINITY;
  }
  Sync::sync();
  for (int c = tid; c < kRows * kVecs; c += NT) {
    const int row = c / kVecs, v = c % kVecs;
    if (m0 + row < rows)
      reinterpret_cast<float4*>(p.ws_o + prow(m0 + row) * p.D)[v] =
          reinterpret_cast<const float4*>(stage + row * kStageRow)[v];
  }
}

// K and V of `span`'s one key tile into their places (cp.async, uncommitted); rows past
// span.kv_hi are zero-filled (their logits are -inf, and a zero V row keeps 0 * V finite).
// Ranged: only the tile's keys in [lo, hi), so that the rows of a split that lie before
// the step's own K/V can be issued before the task's wait and the rest after it.
template <int NT, bool Ranged = false>
__device__ __forceinline__ void load_kv_tile(const attn_tiles::Params& p,
                                             const attn_tiles::KeySpan<kKeys>& span,
                                             unsigned char* work, int tid, int lo = 0,
                                             int hi = 0) {
  const int row0 = span.blk_lo * kKeys;
  for (int i = tid; i < kKeys * kChunks; i += NT) {
    int row, chunk;
    Layout::slot(i, row, chunk);
    const long long r = row0 + row;
    if (Ranged && (r < lo || r >= hi)) continue;
    const bool ok = r < span.kv_hi;
    const int off = Layout::offset(row, chunk);
    attn_tiles::cp_async16(work + kK + off, ok ? span.k + r * p.k_row + chunk * 8 : span.k, ok);
    attn_tiles::cp_async16(work + kV + off, ok ? span.v + r * p.v_row + chunk * 8 : span.v, ok);
  }
}

// One tile: packed query rows [m0, m0 + 64) against key split `split` (batch 1, one KV
// head: the action expert's attention), by NT = 256 threads (two warpgroups) that meet at
// Sync. Hooks as attn_v2_tile's (inputs in, math done, K/V preloaded).
template <int NT, typename Sync, typename Hooks>
__device__ __forceinline__ void attention_tile(const attn_tiles::Params& p, unsigned char* work,
                                               int m0, int split, int tid, Hooks hooks) {
  static_assert(NT == 256, "two warpgroups");
  const int warp = tid >> 5, lane = tid & 31;
  const int g = warp >> 2;   // warpgroup: logits keys [32 g, +32), output dims [128 g, +128)
  const int r0 = (warp & 3) * 16 + (lane >> 2);  // the thread's fragment rows r0, r0 + 8
  const int tig = lane & 3;
  const int rows = p.Lq * p.G;
  const attn_tiles::KeySpan<kKeys> span(p, 0, 0, split);
  // the swizzle is a function of the shared-memory address: atoms must be 1 KiB aligned
  if (FLASH_RT_MK_ATTN_SWIZZLE && (smem_addr(work) & 1023u)) __trap();

  // (kKvTma) the split loaded after the wait takes its K/V by TMA with Q's issue
  const bool kv_tma = kKvTma && !hooks.first_tile_preloaded();
  if (!hooks.issue_tma(work + kQ, m0, kv_tma ? work + kK : nullptr, work + kV,
                     span.blk_lo * kKeys)) {
    for (int i = tid; i < kRows * kChunks; i += NT) {
      int row, chunk;
      Layout::slot(i, row, chunk);
      const int R = m0 + row;
      const bool ok = R < rows;
      const bf16* src = ok ? p.q + (R / p.G) * p.q_row + static_cast<long long>(R % p.G) * p.D +
                                 chunk * 8
                           : p.q;
      attn_tiles::cp_async16(work + kQ + Layout::offset(row, chunk), src, ok);
    }
  }
  if (!hooks.first_tile_preloaded() && !kv_tma)
    load_kv_tile<NT>(p, span, work, tid);
  else if (kPartialPrefetch)  // the rows from the step's own K/V on (none in a prefix split)
    load_kv_tile<NT, true>(p, span, work, tid, p.kv_len_value, INT_MAX);
  attn_tiles::cp_async_commit();
  const int jb = span.blk_lo * kKeys + g * kGroupKeys;  // the warp's first logits key
  unsigned char mk[kGroupKeys / 8][2];
  attn_tiles::load_mask_bytes(mk, jb, tig, span.kv_hi, span.mask);
  attn_tiles::cp_async_wait<0>();
  hooks.wait_tma(kv_tma);
  fence_proxy_async_smem();  // cp.async (generic proxy) writes before the wgmma reads
  Sync::sync();
  hooks.inputs_in();

  // logits: S_g = Q K_g^T (fragment s[j][e]: rows r0 / r0 + 8, keys jb + 8 j + 2 tig + e % 2)
  float s[kGroupKeys / 8][4];
  wgmma_product<WgmmaBf16<kGroupKeys>, kDim / 16>(
      reinterpret_cast<float(&)[kGroupKeys / 2]>(s), [&](int kk, uint64_t& da, uint64_t& db) {
        da = Layout::desc_k_major(work + kQ, 0, kk);
        db = Layout::desc_k_major(work + kK, g * kGroupKeys, kk);
      });

  // softmax across both groups: maxima through shared memory
  float* red = reinterpret_cast<float*>(work + kRed);
  float mx[2];
  attn_tiles::mask_scale_max_pre(s, mx, jb, tig, p.scale_log2, span.kv_hi, mk);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    if (tig == 0) red[g * kRows + r0 + 8 * r] = mx[r];
  }
  Sync::sync();  // both groups' maxima; both groups are done reading Q and K
  float m[2], m_use[2], l[2] = {0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    m[r] = fmaxf(mx[r], red[(1 - g) * kRows + r0 + 8 * r]);
    m_use[r] = m[r] == -INFINITY ? 0.f : m[r];  // no key at all: everything 0, never NaN
  }
  // P = exp2(S - m) as bf16, the A operand of P V (K-major: chunk (query row, key / 8))
#pragma unroll
  for (int j = 0; j < kGroupKeys / 8; ++j) {
    float pe[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      pe[e] = exp2f(s[j][e] - m_use[e >> 1]);
      l[e >> 1] += pe[e];
    }
    // (P keeps the interleaved placement: these stores are conflict-free in it)
    unsigned char* pc = work + kP + Interleaved::offset(0, g * (kGroupKeys / 8) + j) + 4 * tig;
    *reinterpret_cast<unsigned*>(pc + r0 * 16) = attn_tiles::pack_bf16(pe[0], pe[1]);
    *reinterpret_cast<unsigned*>(pc + (r0 + 8) * 16) = attn_tiles::pack_bf16(pe[2], pe[3]);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    if (tig == 0) red[(2 + g) * kRows + r0 + 8 * r] = l[r];
  }
  fence_proxy_async_smem();  // P's stores before the wgmma reads
  Sync::sync();
#pragma unroll
  for (int r = 0; r < 2; ++r) l[r] = red[2 * kRows + r0 + 8 * r] + red[3 * kRows + r0 + 8 * r];

  // output: O[:, 128 g, +128) = P V[:, 128 g, +128)
  float o[kGroupDims / 8][4];
  wgmma_product<WgmmaBf16TransB<kGroupDims>, kKeys / 16>(
      reinterpret_cast<float(&)[kGroupDims / 2]>(o), [&](int ks, uint64_t& da, uint64_t& db) {
        da = Interleaved::desc_k_major(work + kP, 0, ks);
        db = Layout::desc_mn_major(work + kV, ks, g * (kGroupDims / 8));
      });
  hooks.math_done();
  // m is in the log2 domain; the combine works in natural-log units. store_rows: both
  // groups write the same lse (one store would need a branch on g for nothing).
  const auto lse_of = [&](int r) { return (m[r] + log2f(l[r])) * 0.6931471805599453f; };
  if (kStagedStore && !kBf16Partials && p.splits > 1)
    store_partials_staged<NT, Sync>(p, o, l, m0, r0, rows, split, g * kGroupDims, tig, tid,
                                    work, lse_of);
  else
    attn_tiles::store_rows<kGroupDims, kBf16Partials>(p, o, l, m0, r0, rows, 0, 0, split, tig,
                                                      lse_of, g * kGroupDims);
}

}  // namespace wg_attn
}  // namespace mk
}  // namespace flash_rt
