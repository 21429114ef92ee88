// The action expert's task bodies for the persistent kernel (Pi0.5's; Pi0's differs in the
// norm task's residual, PLAIN): the same math, the same bf16 roundings and the same static
// FP8 scales as the kernel sequence of the model's pipeline_common.decoder_step (norm.cu, rope.cu, elementwise.cu's GeGLU, the decoder
// attention of attention.cu), regrouped into tasks. GEMMs are swap-AB wgmma tiles: the 64
// weight rows of a tile are wgmma's M, the (padded) tokens its N, so one accumulator
// fragment holds 64 output features x TP tokens.
//
// FP8 activations (act_w, act_attn, act_mlp: TP rows x K features) are stored chunk-major,
// byte (row, col) at act_offset: (col / 16) TP 16 + row 16 + col % 16, which is the wgmma
// core-matrix layout of the B operand, so a GEMM task's K slice [k0, k0 + klen) is one
// contiguous run of TP klen bytes that a single bulk copy brings into shared memory.
//
// Accumulator fragment (m64nNk32, f32): thread t of the warpgroup (warp w, lane l) holds
// rows r0 = 16 w + l / 4 and r0 + 8, columns 8 j + 2 (l % 4) + {0, 1}, in d[4 j + {0, 1}]
// (row r0) and d[4 j + {2, 3}] (row r0 + 8). The weight packing puts what an epilogue
// needs together into rows r0 / r0 + 8: the two halves of a RoPE pair (QKV), a gate
// column and its up column (gate/up).
#pragma once

#include "../attention_tiles.cuh"
#include "attention_wgmma.cuh"
#include "scheduler.cuh"

namespace flash_rt {
namespace mk {

struct ExpertParams {
  Schedule sched;
  const float* wscale;    // (depth * 4,) weight dequantisation scales: qkv, o, gate_up, down
  const float* ascale;    // scale-table slot of (this step, layer 0, qkv); sites follow
  const float* mod;       // (2 depth + 1, 3 W) this step's adaRMS rows [scale | shift | gate]
  bf16* x;                // (H, W) residual stream, updated in place
  bf16* xn;               // (H, W) final adaRMS output (the action-out projection's input)
  fp8* act_w;             // (TP, W) FP8 input of QKV and gate/up, chunk-major (act_offset)
  fp8* act_attn;          // (TP, heads D) FP8 attention output (O's input), chunk-major
  fp8* act_mlp;           // (TP, F) FP8 GeGLU output (down's input), chunk-major
  float* part;            // (kMaxSplitK, TP, W) O's / down's split-K partial products,
                          // one slice per K split (plain stores; the next norm sums them)
  bf16* q;                // (H, heads D) post-RoPE queries
  bf16* k_cache;          // (depth, cache_rows, D)
  bf16* v_cache;
  const float* rope;      // (rope_rows, D / 2) (cos, sin) table
  const int* positions;   // (H,) positions of the action tokens
  const int* valid_len;   // prefix rows; the step's K/V go to rows valid_len + t
  const unsigned char* key_mask;  // (cache_rows,)
  float* part_o;          // split-K attention partials (attention_workspace_bytes layout)
  float* part_lse;
  int H, W, F, heads, D, cache_rows, rope_rows, splits, depth;
  int o_splits, down_splits;  // K splits of O (one per head) and of down: partials to sum
  float eps, attn_scale, theta;
  int desc_swap;          // development: swap the descriptors' LBO / SBO
  unsigned long long* trace;  // optional (tasks, kTraceStamps): see task_table.h
  // The step's action projections folded into its first and last norm tasks (builds with
  // FLASH_RT_MK_FOLD_IO; fold_in / fold_out 0 otherwise): layer 0's norm_in takes dec_x =
  // act_in(x_bf16) itself, norm_out goes on to v = act_out(xn) and the Euler update.
  const bf16* act_in_w;   // (W, A) action_in_proj weight, and its bias (W,)
  const bf16* act_in_b;
  const bf16* act_out_w;  // (A, W) action_out_proj weight, and its bias (A,)
  const bf16* act_out_b;
  float* act_x;           // (H, A) the flow state x, fp32: x += dt * v
  bf16* act_x_bf16;       // (H, A) its bf16 copy (act_in's input)
  int A, fold_in, fold_out;
  float dt;
  // (FLASH_RT_MK_ATTN_Q_TMA / _KV_TMA) q as a 2-D tensor (H heads rows, D) and the K / V
  // caches as (depth cache_rows, D), boxes of 64 rows x 64 dims with the 128-byte
  // swizzle, rows past a tensor's end read as zeros
  TmaMap q_map, k_map, v_map;
};

// FLASH_RT_MK_FOLD_IO (build switch, default 1 since run 16; 0: the projections and the
// Euler update run as three launches around the kernel): the fold above. Measured no
// faster in runs 12 and 16 while its projections paid a dependent L2 round trip per loop
// iteration; with one round trip each (see action_embedding) and FLASH_RT_MK_PDL, whole
// replays on the H100 0.04-0.15 ms faster at every view count and horizon (run 16).
// Why: outside the kernel each denoising step still launches the action-in GEMM, the
// action-out GEMM and the Euler kernel (run 11 on the H100: the graph's step 38-46 us longer
// than the kernel alone); here they are a few hundred MACs a feature inside tasks that
// already hold the token's row.
#ifndef FLASH_RT_MK_FOLD_IO
#define FLASH_RT_MK_FOLD_IO 1
#endif
constexpr bool kFoldIo = FLASH_RT_MK_FOLD_IO != 0;
constexpr int kMaxActionDim = 32;  // fold: the action dims (a multiple of 8, <= 32)

// The decoder attention tile: head_dim 256, 64 keys per split, 2 warpgroups, one tile per
// split (only ring stage 0 of the v2 kernel is used).
constexpr int kAttnHeadDim = 256, kAttnKeys = 64;
using AttnCfg = attn_tiles::V2Cfg<kAttnHeadDim, kAttnKeys, 2, 2, false>;
constexpr int kCombineMaxSplits = 32;
// FLASH_RT_MK_COMBINE_BATCH: splits whose partials a combine item loads before using any
// (attn_combine_item's BATCH). At 8 a launch of 9-16 splits (2 views h50: 12; 3 views: 16)
// pays two L2 round trips for the partials after the one for the lse values (run 11 on the
// H100: the combine's body 2.6-2.75 us at 12-16 splits against 1.7 at 8); 16 issues them in
// one (16 more registers a thread). Measured in run 12 (H100): every step slower (710 vs
// 701 us at 2 views h50, 553 vs 545 at 1 view h10), the combine's body unchanged at 12
// splits; kept at 8.
#ifndef FLASH_RT_MK_COMBINE_BATCH
#define FLASH_RT_MK_COMBINE_BATCH 8
#endif
constexpr int kCombineBatch = FLASH_RT_MK_COMBINE_BATCH;
static_assert(kCombineBatch == 8 || kCombineBatch == 16, "a combine batch of 8 or 16 splits");
constexpr int kWorkBytes = AttnCfg::kOneTileSmem;
// FLASH_RT_MK_COMBINE_BULK (build switch, default 1; 0: the L2 path): a combine task's
// inputs (its 4 rows' fp32 partial outputs and lse values of every split: 4 KB and 16 bytes
// a split) arrive in shared memory by bulk copies after its acquire, one mbarrier wait,
// and its items read them there; tasks whose rows or splits do not fit take the L2 path.
// Why: the combine's body is two or three dependent L2 round trips (the lse values, then
// the partials 8 splits at a time): 1.7 us at 8 splits, 2.8 us at 12 (run 13 on the H100),
// where a GEMM task's 16-64 KB activation tile arrives by one bulk copy in 0.4-0.7 us. The
// attention tasks fence their partial stores for the async proxy. Same values, same order.
// Measured (H200, 2026-12-07, docs/performance.md): combine span 3.7 -> 2.9 us at 2 views
// h50; with NORM_BULK and PREFETCH_SCALES, 604.0 -> 585.5 us a step (1 view h10: even).
#ifndef FLASH_RT_MK_COMBINE_BULK
#define FLASH_RT_MK_COMBINE_BULK 1
#endif
constexpr bool kCombineBulk = FLASH_RT_MK_COMBINE_BULK != 0;
static_assert(wg_attn::kBytes <= kWorkBytes && wg_attn::kKeys == kAttnKeys &&
                  wg_attn::kDim == kAttnHeadDim,
              "the wgmma attention tile: the same split and head dim, within the work area");
constexpr int kNormChunksMax = 4;  // features per thread in a norm task: W <= 4 * 256
// FLASH_RT_MK_NORM_BULK (build switch, default 1; 0: scalar L2 loads): a norm task's inputs
// (the previous GEMM's K-split partial rows of its tokens and their x rows) arrive in shared
// memory by bulk copies that thread 0 issues after its acquire, one mbarrier wait, instead
// of 32 scalar L2 loads a thread. Why: after the wait a norm task spends 1.7-2.0 us on its
// inputs (run 13 on the H100: 32 KB of partials and 2 KB of x a token), a GEMM task 0.4-0.7
// us on its 16-64 KB activation tile, which arrives by one bulk copy. The producers (the O /
// down epilogues, the norms for x) fence their generic stores for the async proxy, as the
// norms already do for the FP8 activations. Same values, same summation order.
// Measured (H200, 2026-12-07): 631.7 -> 607.4 us a step at 2 views h50, 525.3 -> 500.8 at 1
// view h10 (norm inputs 2.0 -> 1.4 / 1.7 -> 1.1 us).
#ifndef FLASH_RT_MK_NORM_BULK
#define FLASH_RT_MK_NORM_BULK 1
#endif
constexpr bool kNormBulk = FLASH_RT_MK_NORM_BULK != 0;
// Where a norm task's bulk inputs land in the work area: after its reduction scratch (the
// warps' sums, then the fold's W floats); partial slices [kMaxSplitK][kNormTokens][W] fp32,
// then x [kNormTokens][W] bf16.
constexpr int kNormStageOffset = 8192;
constexpr int kNormMaxWidth = kNormChunksMax * kConsumers;
static_assert((kConsumerWarps * kNormTokens + kNormMaxWidth) * 4 <= kNormStageOffset &&
                  kNormStageOffset + kNormTokens * kNormMaxWidth * (kMaxSplitK * 4 + 2) <=
                      kWorkBytes,
              "a norm task's scratch and bulk inputs fit the work area");

// FLASH_RT_MK_SPLIT_TOKENS (build switch, default 0; 1 for an A/B): a GEMM task's tokens
// split over the block's two warpgroups, each an m64n(TP/2) MMA chain over the same weight
// pages and its own half of the activation tile, each the epilogue of its half. Why: one
// warpgroup does a GEMM task's MMAs and epilogue while the other waits (run 12 at 2 views
// h50, tpad 64: math 0.9-1.0 us and epilogues 0.8-1.9 us of the QKV, O, gate/up and down
// tasks, whose spans are 2.8-5.1 us). Measured in run 13 (H100): slower, 665 vs 652 us a
// step at 2 views h50, 559 vs 535 at 1 view h10: the epilogues halved, but a task's MMA
// time is its 32 dependent k32 steps, not its FLOPs (m64n8 to n64 chains all ~1 us), and
// two chains beside each other took 1.3-1.4x as long. Kept off.
#ifndef FLASH_RT_MK_SPLIT_TOKENS
#define FLASH_RT_MK_SPLIT_TOKENS 0
#endif
constexpr int kGemmGroups = FLASH_RT_MK_SPLIT_TOKENS ? 2 : 1;
// FLASH_RT_MK_MMA_CHAINS=2 (build switch, default 1; 2 for an A/B): a GEMM task's k32 steps
// alternate between two accumulators (even steps, odd steps), added at the end. Why: run
// 13 showed a task's MMA time is its chain of dependent k32 steps (~30 ns each, ~1 us for
// K = 1024 at any N), not its FLOPs; two independent chains let the tensor cores work on
// one while the other's previous step completes (two chains on two warpgroups ran at
// 1.3-1.4x the time of one for twice the steps). Costs TN / 2 registers and changes the
// fp32 summation order (two partial sums). Measured (H200, 2026-12-07): 631.7 -> 656.7 us
// a step at 2 views h50 (slower), 525.3 -> 517.2 at 1 view h10; kept off.
#ifndef FLASH_RT_MK_MMA_CHAINS
#define FLASH_RT_MK_MMA_CHAINS 1
#endif
constexpr int kMmaChains = FLASH_RT_MK_MMA_CHAINS;
static_assert(kMmaChains == 1 || kMmaChains == 2, "one or two MMA chains a task");
constexpr int kGemmThreads = 128 * kGemmGroups;  // a GEMM task's MMA + epilogue threads
static_assert(kGemmThreads <= kConsumers, "the GEMM warpgroups are consumer threads");
// Tokens of a GEMM warpgroup (its accumulator's N: TP / 2 is a multiple of 8 for every
// tpad) and the first of them for thread `tid` (0 in the unsplit build, at compile time).
template <int TP>
constexpr int kGroupTokens = TP / kGemmGroups;
template <int TP>
__device__ __forceinline__ int group_token0(int tid) {
  return kGemmGroups == 1 ? 0 : (tid >> 7) * kGroupTokens<TP>;
}
// The thread's warp within its GEMM warpgroup (the accumulator fragment's row block).
__device__ __forceinline__ int group_warp(int tid) {
  return kGemmGroups == 1 ? tid >> 5 : (tid >> 5) & 3;
}

__device__ __forceinline__ float bf16r(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// The two inner trace stamps of a task (inputs in, math done), taken by thread 0 when the
// launch traces; a task that sets neither leaves both at its run start.
struct TaskMarks {
  unsigned long long inputs = 0, math = 0;
  __device__ __forceinline__ void inputs_in(const ExpertParams& p, int tid) {
    if (p.trace && tid == 0) inputs = global_ns();
  }
  __device__ __forceinline__ void math_done(const ExpertParams& p, int tid) {
    if (p.trace && tid == 0) math = global_ns();
  }
};

// The block's bulk input loads (a GEMM task's activation tile; a norm's or a combine's
// inputs under the bulk switches) take turns on one mbarrier. Thread 0 opens a load: the
// producers' generic stores (acquired by its wait) and the block's own generic use of the
// work area are ordered before the async-proxy copies it then issues on `bar`, `bytes` in
// all.
__device__ __forceinline__ void bulk_load_begin(uint64_t* bar, uint32_t bytes) {
  fence_proxy_async_global();
  fence_proxy_async_smem();
  mbar_arrive_expect_tx(bar, bytes);
}

// Every thread of the block: wait for the block's load number `loads` (its parity), count it.
__device__ __forceinline__ void bulk_load_wait(uint64_t* bar, int& loads) {
  mbar_wait(bar, static_cast<uint32_t>(loads & 1));
  ++loads;
}

// Byte offset of (row, col) in a chunk-major FP8 activation of TP rows (see the top).
template <int TP>
__device__ __forceinline__ size_t act_offset(int row, int col) {
  return static_cast<size_t>(col >> 4) * (TP * 16) + row * 16 + (col & 15);
}

__device__ __forceinline__ float site_scale(const ExpertParams& p, int layer, int site) {
  return p.ascale[(layer * kSitesPerLayer + site) * kScaleStride];
}

__device__ __forceinline__ float gemm_scale(const ExpertParams& p, int layer, int site) {
  return site_scale(p, layer, site) * p.wscale[layer * kSitesPerLayer + site];
}

// ---------------------------------------------------------------- adaRMS rows
// Which adaRMS rows a norm task uses: the gate of the residual it adds (-1: none, layer 0's
// norm_in), its norm's (scale, shift), and the FP8 scale site of its output.
struct NormSites {
  int gate_row, norm_row, site;
};

__device__ __forceinline__ NormSites norm_sites(const ExpertParams& p, const Task& t) {
  const int L = t.layer;
  if (t.op == kNormIn) return {L > 0 ? 2 * L - 1 : -1, 2 * L, kSiteQkv};  // the QKV input
  if (t.op == kNormMid) return {2 * L, 2 * L + 1, kSiteGateUp};             // the gate/up input
  return {2 * p.depth - 1, 2 * p.depth, kSiteQkv};  // kNormOut (bf16 out: unused)
}

// FLASH_RT_MK_PREFETCH_SCALES (build switch, default 1; 0: loaded where used): a task's static
// scales (task_scales) are loaded before its wait with its other launch inputs, instead of
// after its MMAs (GEMM epilogues) or after its reduction barrier (norms). Why: those loads
// follow a barrier, so each is one L2 round trip on the task's critical path (SASS with the
// switch off: the epilogue's two LDG right after the MMA wait's BAR.SYNC), in four GEMM
// and two norm phases a layer. Same values. Measured (H200, 2026-12-07): 631.7 -> 621.0 us a
// step at 2 views h50, 525.3 -> 517.8 at 1 view h10 (GEMM epilogues 0.1-0.2 us shorter).
#ifndef FLASH_RT_MK_PREFETCH_SCALES
#define FLASH_RT_MK_PREFETCH_SCALES 1
#endif
constexpr bool kPrefetchScales = FLASH_RT_MK_PREFETCH_SCALES != 0;

// The static scales a task's output uses: `s` multiplies a GEMM's accumulator (input x
// weight dequantisation) or is a norm's FP8 output scale (1: the final norm's bf16 output);
// `inv_s` is gate/up's FP8 output scale, the down projection's input, inverted. Without the
// switch each task loads its own where it uses them, in the same expressions (the code
// measured as the default until 2026-12-07, kept for A/Bs).
struct TaskScales {
  float s = 1.f, inv_s = 1.f;
};

__device__ __forceinline__ TaskScales task_scales(const ExpertParams& p, const Task& t) {
  switch (t.op) {
    case kQkv: return {gemm_scale(p, t.layer, kSiteQkv), 1.f};
    case kOProj: return {gemm_scale(p, t.layer, kSiteO), 1.f};
    case kGateUp: return {gemm_scale(p, t.layer, kSiteGateUp), 1.f / site_scale(p, t.layer, kSiteDown)};
    case kDown: return {gemm_scale(p, t.layer, kSiteDown), 1.f};
    case kNormIn:
    case kNormMid: return {site_scale(p, t.layer, norm_sites(p, t).site), 1.f};
    default: return {};  // kNormOut (bf16), attention, combine
  }
}


// Feature `i` of thread `tid` in a norm task: strided by the block's thread count, so one
// warp's load or store of feature i touches 32 consecutive elements (whole sectors). A
// contiguous run per thread (f = tid * fpt + i, before run 10) made each warp instruction
// touch 16 sectors to use 4 bytes of each: 4x the L2 traffic for the split-K partials.
__device__ __forceinline__ int norm_feature(int tid, int i) { return tid + i * kConsumers; }

// This step's adaRMS values for the thread's features: launch inputs (never written in the
// launch), so the kernel loads them before the task's wait and their round trip overlaps
// it (run 7 on the H100: 3 of a norm task's 6.5 us were its loads, after the wait).
struct NormRows {
  float sc[kNormChunksMax], sh[kNormChunksMax], g[kNormChunksMax];
};

__device__ __forceinline__ NormRows norm_rows(const ExpertParams& p, const Task& t, int tid) {
  const NormSites ns = norm_sites(p, t);
  const int W = p.W, fpt = W / kConsumers;
  const float* mrow = p.mod + static_cast<size_t>(ns.norm_row) * 3 * W;
  NormRows m;
#pragma unroll
  for (int i = 0; i < kNormChunksMax; ++i) {
    if (i >= fpt) break;
    const int f = norm_feature(tid, i);
    m.sc[i] = mrow[f];
    m.sh[i] = mrow[W + f];
    m.g[i] = ns.gate_row >= 0 ? p.mod[static_cast<size_t>(ns.gate_row) * 3 * W + 2 * W + f] : 0.f;
  }
  return m;
}

// ---------------------------------------------------------------- folded action I/O
// Both folded projections issue every load they need before their first product: one L2
// round trip each. (Their first version looped over the action dims / the features with a
// runtime bound, a dependent round trip per iteration: ~40 us a step at 2 views h50 on the
// H100, what the three launches it replaces cost; run 16.)
constexpr int kActionChunks = kMaxActionDim / 8;  // 16-byte bf16 chunks of an action row

// dec_x[tok, f] for the thread's features f = norm_feature(tid, i), i < fpt: bf16(x_bf16[tok]
// . act_in_w[f] + act_in_b[f]), the action-in GEMM's value (fp32 products summed in dim
// order, bias, one bf16 rounding). Launch inputs only (x_bf16 is the previous launch's).
// Inlined (as measured in run 16), the tpad-48 instance spills 4 bytes (as the first
// version did); out of line no instance spills (compiled, not yet timed).
__device__ __forceinline__ void action_embedding(const ExpertParams& p, int tok, int tid,
                                                 float (&out)[kNormChunksMax]) {
  const int chunks = p.A / 8, fpt = p.W / kConsumers;
  const uint4* x4 = reinterpret_cast<const uint4*>(p.act_x_bf16 + static_cast<size_t>(tok) * p.A);
  uint4 xv[kActionChunks], wv[kNormChunksMax][kActionChunks];
  float bias[kNormChunksMax];
#pragma unroll
  for (int c = 0; c < kActionChunks; ++c) xv[c] = c < chunks ? x4[c] : make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int i = 0; i < kNormChunksMax; ++i) {
    const int f = norm_feature(tid, i);
    const uint4* w4 = reinterpret_cast<const uint4*>(p.act_in_w + static_cast<size_t>(f) * p.A);
#pragma unroll
    for (int c = 0; c < kActionChunks; ++c)
      wv[i][c] = i < fpt && c < chunks ? w4[c] : make_uint4(0, 0, 0, 0);
    bias[i] = i < fpt ? __bfloat162float(p.act_in_b[f]) : 0.f;
  }
#pragma unroll
  for (int i = 0; i < kNormChunksMax; ++i) {
    float acc = 0.f;
#pragma unroll
    for (int c = 0; c < kActionChunks; ++c) {  // zero chunks past A add exact zeros
      const __nv_bfloat162* xh = reinterpret_cast<const __nv_bfloat162*>(&xv[c]);
      const __nv_bfloat162* wh = reinterpret_cast<const __nv_bfloat162*>(&wv[i][c]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(xh[j]), b = __bfloat1622float2(wh[j]);
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
      }
    }
    out[i] = bf16r(acc + bias[i]);
  }
}

// The step's tail for one token, by the final norm task's threads: v = bf16(xn . act_out_w[a]
// + act_out_b[a]) (the action-out GEMM's value), then the Euler kernel's x += dt * v and
// x_bf16 = bf16(x). The token's xn (as stored) goes through shared memory (`red`, W floats)
// so that warp w takes action dims [4 w, 4 w + 4) over all features, lane l the 16-byte
// weight chunks l, l + 32, ... of each of its dims' rows (coalesced, all issued at once):
// one barrier, and four shuffle sums a warp instead of a block-wide reduction of every dim.
// Out of line: inlined, its registers made the tpad-48 instance spill (20 bytes).
__device__ __noinline__ void action_out_euler(const ExpertParams& p, int tok,
                                                 const float (&xn)[kNormChunksMax], int tid,
                                                 float* red) {
  constexpr int kDimsPerWarp = kMaxActionDim / kConsumerWarps;
  constexpr int kRowChunks = kNormChunksMax * kConsumers / (8 * 32);  // per lane, W <= 1024
  const int warp = tid >> 5, lane = tid & 31, fpt = p.W / kConsumers;
  const int row_chunks = p.W / (8 * 32);  // W is a multiple of 256
#pragma unroll
  for (int i = 0; i < kNormChunksMax; ++i) {
    if (i < fpt) red[norm_feature(tid, i)] = xn[i];
  }
  const int a0 = warp * kDimsPerWarp;
  uint4 wv[kDimsPerWarp][kRowChunks];
#pragma unroll
  for (int j = 0; j < kDimsPerWarp; ++j) {
    const uint4* w4 = reinterpret_cast<const uint4*>(p.act_out_w + static_cast<size_t>(a0 + j) * p.W);
#pragma unroll
    for (int c = 0; c < kRowChunks; ++c)
      wv[j][c] = a0 + j < p.A && c < row_chunks ? w4[c * 32 + lane] : make_uint4(0, 0, 0, 0);
  }
  ConsumerSync::sync();
  float acc[kDimsPerWarp] = {};
#pragma unroll
  for (int c = 0; c < kRowChunks; ++c) {
    if (c >= row_chunks) break;
    const float4* x4 = reinterpret_cast<const float4*>(red + 8 * (c * 32 + lane));
    const float4 lo = x4[0], hi = x4[1];
    const float x[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int j = 0; j < kDimsPerWarp; ++j) {
      const __nv_bfloat162* wh = reinterpret_cast<const __nv_bfloat162*>(&wv[j][c]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 w = __bfloat1622float2(wh[e]);
        acc[j] = fmaf(x[2 * e], w.x, acc[j]);
        acc[j] = fmaf(x[2 * e + 1], w.y, acc[j]);
      }
    }
  }
  float mine = 0.f;
#pragma unroll
  for (int j = 0; j < kDimsPerWarp; ++j) {
    const float total = warp_sum(acc[j]);
    if (lane == j) mine = total;
  }
  const int a = a0 + lane;
  if (lane < kDimsPerWarp && a < p.A) {
    const float v = bf16r(mine + __bfloat162float(p.act_out_b[a]));
    const size_t i = static_cast<size_t>(tok) * p.A + a;
    const float x = __fadd_rn(p.act_x[i], __fmul_rn(p.dt, v));  // as euler_kernel
    p.act_x[i] = x;
    p.act_x_bf16[i] = __float2bfloat16_rn(x);
  }
  if constexpr (kNormTokens > 1) ConsumerSync::sync();  // `red` is the next token's
}

// (kNormBulk) Thread 0 brings the task's partial rows (n_parts slices) and, unless `embed`,
// its x rows into `stage` by bulk copies on `bar`; every thread waits (the block's load
// number `loads`).
template <int TP>
__device__ __forceinline__ void norm_bulk_inputs(const ExpertParams& p, int t0, int ntok,
                                                 int n_parts, bool embed, float* stage,
                                                 uint64_t* bar, int& loads, int tid) {
  const uint32_t row_f = static_cast<uint32_t>(ntok * p.W);
  const uint32_t bytes = n_parts * row_f * 4u + (embed ? 0u : row_f * 2u);
  if (bytes == 0) return;
  if (tid == 0) {
    bulk_load_begin(bar, bytes);
    for (int ks = 0; ks < n_parts; ++ks)
      bulk_g2s(stage + ks * kNormTokens * p.W, p.part + (static_cast<size_t>(ks) * TP + t0) * p.W,
               row_f * 4u, bar);
    if (!embed)
      bulk_g2s(stage + kMaxSplitK * kNormTokens * p.W, p.x + static_cast<size_t>(t0) * p.W,
               row_f * 2u, bar);
  }
  bulk_load_wait(bar, loads);
}

// kNormTokens tokens x all W features per task, feature-parallel: thread `tid` owns
// features norm_feature(tid, 0 .. FPT) of every token, so all its loads (the previous
// GEMM's split-K partials of its features, x) are issued before any store; the adaRMS rows
// come prefetched (norm_rows). (H100: ~20 us per task at 8 tokens in run 2, spilled; ~7 us
// at one token per task and TP = 64, ~4.5 us at TP = 16 in run 6.) Per-token sums of
// squares meet in shared memory. Math as norm.cu's gated_residual_adarms / adarms: x +=
// gate * bf16(sum of the partials) rounded to bf16 as stored, then adaRMS with this step's
// (scale, shift), FP8 with the site's static scale (bf16 for the final norm); sum order
// aside (here: K splits in order, so the step is deterministic). PLAIN (Pi0's expert): the
// residual is x += sum, rounded once (its sequence adds the branch in the GEMM's epilogue
// with C = x), and the adaRMS rows are the constant zero table (scale 0, shift 0).
template <int TP, bool PLAIN>
__device__ __forceinline__ void norm_task(const ExpertParams& p, const Task& t, int tid,
                                          float* red, const NormRows& m,
                                          const TaskScales& pre_scales, TaskMarks& marks,
                                          uint64_t* bar, int& loads) {
  constexpr int kMaxFpt = kNormChunksMax;  // W <= kMaxFpt * kConsumers
  const int W = p.W, fpt = W / kConsumers;
  const int t0 = t.tile, ntok = min(kNormTokens, p.H - t0);
  const NormSites ns = norm_sites(p, t);
  const int gate_row = ns.gate_row;
  float v[kNormTokens][kMaxFpt], a[kMaxFpt][kNormTokens];
  // layer 0's residual stream is the step's action embedding: read it, or (fold_in) make it
  const bool embed = kFoldIo && p.fold_in && t.op == kNormIn && t.layer == 0;
  float* stage = red + kNormStageOffset / 4;
  const bf16* x_stage = reinterpret_cast<const bf16*>(stage + kMaxSplitK * kNormTokens * W);
  if constexpr (kNormBulk) {
    const int n_bulk = gate_row < 0 ? 0 : t.op == kNormMid ? p.o_splits : p.down_splits;
    norm_bulk_inputs<TP>(p, t0, ntok, n_bulk, embed, stage, bar, loads, tid);
  }
  // 1. every load the previous phase feeds: the partials of all its K splits, then x
  if (gate_row >= 0) {
    const int n_parts = t.op == kNormMid ? p.o_splits : p.down_splits;
    // predicated, not a loop that breaks at n_parts: the array then stays in registers
    // (a break made it a local-memory array, 60 spill instructions)
    float pv[kMaxSplitK][kNormTokens][kMaxFpt];
#pragma unroll
    for (int ks = 0; ks < kMaxSplitK; ++ks) {
#pragma unroll
      for (int k = 0; k < kNormTokens; ++k) {
        const float* src = p.part + (static_cast<size_t>(ks) * TP + t0 + k) * W;
        const float* staged = stage + (ks * kNormTokens + k) * W;
#pragma unroll
        for (int i = 0; i < kMaxFpt; ++i) {
          const int f = norm_feature(tid, i);
          pv[ks][k][i] = ks < n_parts && i < fpt ? (kNormBulk ? staged[f] : __ldcg(src + f)) : 0.f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kMaxFpt; ++i) {
#pragma unroll
      for (int k = 0; k < kNormTokens; ++k) {
        float sum = 0.f;
#pragma unroll
        for (int ks = 0; ks < kMaxSplitK; ++ks) sum += pv[ks][k][i];  // + 0.f past n_parts: exact
        a[i][k] = sum;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kNormTokens; ++k) {
    if (k >= ntok) break;
    if (embed) {
      action_embedding(p, t0 + k, tid, v[k]);
      continue;
    }
    const bf16* xs = p.x + static_cast<size_t>(t0 + k) * W;
#pragma unroll
    for (int i = 0; i < kMaxFpt; ++i) {
      if (i < fpt) {
        const int f = norm_feature(tid, i);
        v[k][i] = __bfloat162float(kNormBulk ? x_stage[k * W + f] : __ldcg(xs + f));
      }
    }
  }
  // 2. residual, per-token partial sums of squares
  float ss[kNormTokens];
#pragma unroll
  for (int k = 0; k < kNormTokens; ++k) {
    ss[k] = 0.f;
    if (k >= ntok) continue;
#pragma unroll
    for (int i = 0; i < kMaxFpt; ++i) {
      if (i >= fpt) break;
      if (gate_row >= 0) {
        v[k][i] = PLAIN ? bf16r(__fadd_rn(v[k][i], a[i][k]))
                        : bf16r(__fadd_rn(v[k][i], __fmul_rn(m.g[i], bf16r(a[i][k]))));
      }
      ss[k] += v[k][i] * v[k][i];
    }
  }
  marks.inputs_in(p, tid);
  const int warp = tid >> 5, lane = tid & 31;
#pragma unroll
  for (int k = 0; k < kNormTokens; ++k) {
    const float w = warp_sum(ss[k]);
    if (lane == 0) red[warp * kNormTokens + k] = w;
  }
  ConsumerSync::sync();
  marks.math_done(p, tid);
  // 3. every store
  const float s = kPrefetchScales      ? pre_scales.s
                  : t.op == kNormOut ? 1.f
                                     : site_scale(p, t.layer, ns.site);
  float xn[kNormTokens][kMaxFpt];  // the final norm's output as stored (bf16), for the fold
#pragma unroll
  for (int k = 0; k < kNormTokens; ++k) {
    if (k >= ntok) break;
    float tot = 0.f;
#pragma unroll
    for (int w = 0; w < kConsumerWarps; ++w) tot += red[w * kNormTokens + k];
    const float rstd = rsqrtf(tot * (1.f / static_cast<float>(W)) + p.eps);
    const size_t row = static_cast<size_t>(t0 + k) * W;
#pragma unroll
    for (int i = 0; i < kMaxFpt; ++i) {
      if (i >= fpt) break;
      const float o = v[k][i] * rstd * (1.f + m.sc[i]) + m.sh[i];
      const int f = norm_feature(tid, i);
      if (gate_row >= 0 || embed) p.x[row + f] = __float2bfloat16_rn(v[k][i]);
      if (t.op == kNormOut) {
        p.xn[row + f] = __float2bfloat16_rn(o);
        xn[k][i] = bf16r(o);
      } else {
        p.act_w[act_offset<TP>(t0 + k, f)] = to_fp8(o, s);
      }
    }
  }
  if (t.op != kNormOut) fence_proxy_async_global();  // act_w is read by bulk copies
  if (kFoldIo && p.fold_out && t.op == kNormOut) {
#pragma unroll
    for (int k = 0; k < kNormTokens; ++k) {
      if (k < ntok) action_out_euler(p, t0 + k, xn[k], tid, red + kConsumerWarps * kNormTokens);
    }
  }
}

// ---------------------------------------------------------------- GEMM tiles
// The task's activation slice, rows [0, TP) x features [k0, k0 + klen): one bulk copy of the
// chunk-major tile (already the wgmma B layout), issued by thread 0 after its acquire; the
// MMA warpgroup waits on `bar` (load number `n` of this block: parity n & 1). Replaces a
// 16-byte cp.async per thread and chunk (run 3: ~3-4 us of every GEMM task on the H100).
template <int TP>
__device__ __forceinline__ void load_activation(const ExpertParams& p, const Task& t,
                                                unsigned char* work, uint64_t* bar, int tid) {
  if (tid != 0) return;
  const fp8* src = t.op == kOProj ? p.act_attn : t.op == kDown ? p.act_mlp : p.act_w;
  const uint32_t bytes = static_cast<uint32_t>(TP * t.klen);
  bulk_load_begin(bar, bytes);
  bulk_g2s(work, src + static_cast<size_t>(t.k0) * TP, bytes, bar);
}

// Weight pages a GEMM task consumes (its K range in pages of kPageK).
__device__ __forceinline__ int task_pages(const Task& t) { return (t.klen + kPageK - 1) / kPageK; }

// A GEMM warpgroup: D (64 x TN) = W tile (pages from the ring) x its tokens' rows of act^T
// (rows [tok0, tok0 + TN) of the tile: TN 16-byte rows into each K chunk of TP rows).
template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ void mma_tile(const ExpertParams& p, const Task& t,
                                         const unsigned char* work, uint64_t* act_bar,
                                         int act_parity, const WeightRing& ring,
                                         int first_page, int tid, float (&d)[TN / 2],
                                         TaskMarks& marks) {
  constexpr uint32_t kA_lbo = kTileRows * 16, kA_sbo = 128;
  constexpr uint32_t kB_lbo = TP * 16, kB_sbo = 128;
  const bool swap = p.desc_swap != 0;
  // Every page of the task has landed before the first MMA: no wait (a spin loop, i.e. a
  // branch) between two wgmma, which made ptxas serialise them (C7520). A task holds at
  // most kWeightSlots pages, streamed ahead while the previous task ran.
  for (int pg = 0; pg < task_pages(t); ++pg) ring.wait_page(first_page + pg);
  mbar_wait(act_bar, static_cast<uint32_t>(act_parity));
  marks.inputs_in(p, tid);
  constexpr int kStepsPerPage = kPageK / 32;
  const int steps = t.klen / 32;
  // k32 step kk's descriptors: A from its weight page, B the warpgroup's tokens of `work`
  const auto step_desc = [&](int kk, uint64_t& da, uint64_t& db) {
    const unsigned char* a = ring.page(first_page + kk / kStepsPerPage) +
                             (kk % kStepsPerPage) * 2 * kA_lbo;
    const unsigned char* b = work + 2 * kk * kB_lbo + group_token0<TP>(tid) * 16;
    da = swap ? make_desc(a, kA_sbo, kA_lbo) : make_desc(a, kA_lbo, kA_sbo);
    db = swap ? make_desc(b, kB_sbo, kB_lbo) : make_desc(b, kB_lbo, kB_sbo);
  };
  if constexpr (kMmaChains == 2) {
    // even k steps into d, odd ones into e (the schedule's K slices are whole pages or
    // heads: an even number of k32 steps), e added in at the end
    if (steps & 1) __trap();  // (a schedule bug: no K slice of the expert is odd)
    float e[TN / 2];
#pragma unroll
    for (int i = 0; i < TN / 2; ++i) d[i] = e[i] = 0.f;
    wgmma_fence_operands(d);
    wgmma_fence_operands(e);
    wgmma_fence();
    for (int kk = 0; kk < steps; kk += 2) {
      uint64_t da, db, da2, db2;
      step_desc(kk, da, db);
      step_desc(kk + 1, da2, db2);
      Wgmma<TN>::run(d, da, db, kk > 0);
      Wgmma<TN>::run(e, da2, db2, kk > 0);
    }
    wgmma_commit();
    wgmma_wait_all();
    wgmma_fence_operands(d);
    wgmma_fence_operands(e);
#pragma unroll
    for (int i = 0; i < TN / 2; ++i) d[i] += e[i];
    marks.math_done(p, tid);
    return;
  }
#pragma unroll
  for (int i = 0; i < TN / 2; ++i) d[i] = 0.f;
  wgmma_fence_operands(d);
  wgmma_fence();
  for (int kk = 0; kk < steps; ++kk) {
    uint64_t da, db;
    step_desc(kk, da, db);
    Wgmma<TN>::run(d, da, db, kk > 0);
  }
  wgmma_commit();
  wgmma_wait_all();
  wgmma_fence_operands(d);
  marks.math_done(p, tid);
}

// A position past the table (never, for the expert's own rows: the table has cache_rows
// rows): one out-of-line copy of the fp32 formula instead of TP / 4 inlined ones, which
// were a quarter of the kernel's SASS (powf + sincosf).
__device__ __noinline__ float2 rope_angle_outside_table(int pos, int i, int D, float theta) {
  return rope_angle(static_cast<float>(pos), i, D, theta);
}

// A QKV tile's RoPE pair index for this thread (rows r0 / r0 + 8 of its fragment), and
// whether the tile is rotated (q heads, then the one k head; v is not).
struct RopePair {
  int i;
  bool rotate;
};

__device__ __forceinline__ RopePair rope_pair(const ExpertParams& p, const Task& t, int tid) {
  const int w = group_warp(tid), l = tid & 31;
  const int tiles_per_head = p.D / kTileRows;
  return {(t.tile % tiles_per_head) * (kTileRows / 2) + 8 * w + (l >> 2),
          t.tile / tiles_per_head <= p.heads};
}

// The (cos, sin) of the thread's pair for its tokens tok0 + 8 j + 2 (l % 4) + e (TN of
// them: its warpgroup's, group_token0): launch inputs (positions and the table), loaded
// before the task's wait like the norm's rows.
template <int TN>
struct RopeCs {
  float2 cs[TN / 8][2];
};

template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ RopeCs<TN> rope_cs(const ExpertParams& p, const Task& t, int tid) {
  RopeCs<TN> r{};
  const RopePair rp = rope_pair(p, t, tid);
  if (!rp.rotate) return r;
  const int q4 = tid & 3, half = p.D / 2, tok0 = group_token0<TP>(tid);
  int pos[TN / 8][2];
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + 8 * j + 2 * q4 + e;
      pos[j][e] = tok < p.H ? p.positions[tok] : 0;
    }
  }
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int ps = pos[j][e];
      r.cs[j][e] = (ps >= 0 && ps < p.rope_rows)
                       ? reinterpret_cast<const float2*>(p.rope)[static_cast<size_t>(ps) * half + rp.i]
                       : rope_angle_outside_table(ps, rp.i, p.D, p.theta);
    }
  }
  return r;
}

// The two halves of the thread's RoPE pair for token column (j, e) of its fragment: the
// bf16 GEMM outputs (as the GEMM stores them), rotated with the prefetched (cos, sin) for
// q and k tiles (rope.cu's math).
template <int TN>
__device__ __forceinline__ float2 rope_pair_out(const float (&d)[TN / 2], int j, int e, float s,
                                                const RopeCs<TN>& rc, bool rotate) {
  const float x1 = bf16r(d[4 * j + e] * s), x2 = bf16r(d[4 * j + 2 + e] * s);
  float r1 = x1, r2 = x2;
  if (rotate) {
    r1 = x1 * rc.cs[j][e].x - x2 * rc.cs[j][e].y;
    r2 = x2 * rc.cs[j][e].x + x1 * rc.cs[j][e].y;
  }
  return {r1, r2};
}

// The output row of token `tok` (< H) of a QKV tile of head `head` (q heads, then k, then
// v): the q buffer's, or K/V cache row off + tok of the layer (its first row layer_rows);
// nullptr for a cache row outside the cache. The staged epilogue's; qkv_epilogue keeps the
// same choice inline (its measured SASS; one of the two goes once the A/B has decided).
__device__ __forceinline__ bf16* qkv_row(const ExpertParams& p, int head, size_t layer_rows,
                                         int off, int tok) {
  if (head < p.heads) return p.q + static_cast<size_t>(tok) * p.heads * p.D + head * p.D;
  const int row = off + tok;
  if (row < 0 || row >= p.cache_rows) return nullptr;
  return (head == p.heads ? p.k_cache : p.v_cache) + (layer_rows + row) * p.D;
}

// QKV epilogue: RoPE'd pairs (rope_pair_out), q -> q buffer, k / v -> cache rows
// valid_len + t.
template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ void qkv_epilogue(const ExpertParams& p, const Task& t, int off, int tid,
                                             const float (&d)[TN / 2], const RopeCs<TN>& rc,
                                             const TaskScales& sc) {
  const int q4 = tid & 3, tok0 = group_token0<TP>(tid);
  const int head = t.tile / (p.D / kTileRows);
  const RopePair rp = rope_pair(p, t, tid);
  const int i = rp.i, half = p.D / 2;
  const float s = kPrefetchScales ? sc.s : gemm_scale(p, t.layer, kSiteQkv);
  const size_t layer_rows = static_cast<size_t>(t.layer) * p.cache_rows;
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + 8 * j + 2 * q4 + e;
      if (tok >= p.H) continue;
      const float2 r = rope_pair_out<TN>(d, j, e, s, rc, rp.rotate);
      bf16* dst;  // qkv_row's choice, inline: as a call it changes this measured SASS
      if (head < p.heads) {
        dst = p.q + static_cast<size_t>(tok) * p.heads * p.D + head * p.D;
      } else {
        const int row = off + tok;
        if (row < 0 || row >= p.cache_rows) continue;
        dst = (head == p.heads ? p.k_cache : p.v_cache) + (layer_rows + row) * p.D;
      }
      dst[i] = __float2bfloat16_rn(r.x);
      dst[i + half] = __float2bfloat16_rn(r.y);
    }
  }
}

// FLASH_RT_MK_STAGED_EPILOGUE (default 1; 0 for an A/B): QKV and gate/up stage their tile's
// output in shared memory (the `work` area, free once the MMAs are done) and write it with
// 16-byte stores, instead of one 2-byte (QKV) or 1-byte (gate/up) store per value scattered
// over four tokens per warp instruction (run 10 at 2 views h50, tpad 64: QKV's epilogue 2.8
// us, gate/up's 2.6, against 0.8-0.9 at tpad 16). Run 11 on the H100, with the wgmma
// attention tile: 693 vs 706 us a step at 2 views h50, 542 vs 547 at 1 view h10; without
// it (the mma.sync tile's register pressure: the staged build spills) it was slower at h10.
#ifndef FLASH_RT_MK_STAGED_EPILOGUE
#define FLASH_RT_MK_STAGED_EPILOGUE 1
#endif
constexpr bool kStagedEpilogue = FLASH_RT_MK_STAGED_EPILOGUE != 0;

// The GEMM warpgroups' own barrier (named barrier 2): the staged epilogues' hand-over from
// the fragment layout to the 16-byte copies.
struct MmaGroupSync {
  __device__ __forceinline__ static void sync() {
    asm volatile("bar.sync 2, %0;\n" ::"n"(kGemmThreads) : "memory");
  }
};

// qkv_epilogue's math, staged: a tile holds, per token, features [i0, i0 + 32) and
// [i0 + D/2, i0 + D/2 + 32) of one head (the two halves of its RoPE pairs), staged as
// (TP, 2, 32) bf16 and written as 16-byte chunks.
template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ void qkv_epilogue_staged(const ExpertParams& p, const Task& t, int off,
                                                    int tid, const float (&d)[TN / 2],
                                                    const RopeCs<TN>& rc, const TaskScales& sc,
                                                    unsigned char* work) {
  constexpr int kRun = kTileRows / 2;  // features per half of a tile, per token
  const int q4 = tid & 3, tok0 = group_token0<TP>(tid);
  const RopePair rp = rope_pair(p, t, tid);
  const int half = p.D / 2, i0 = (t.tile % (p.D / kTileRows)) * kRun, il = rp.i - i0;
  const int head = t.tile / (p.D / kTileRows);
  const size_t layer_rows = static_cast<size_t>(t.layer) * p.cache_rows;
  const float s = kPrefetchScales ? sc.s : gemm_scale(p, t.layer, kSiteQkv);
  bf16* stage = reinterpret_cast<bf16*>(work);
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + 8 * j + 2 * q4 + e;
      const float2 r = rope_pair_out<TN>(d, j, e, s, rc, rp.rotate);
      stage[(tok * 2 + 0) * kRun + il] = __float2bfloat16_rn(r.x);
      stage[(tok * 2 + 1) * kRun + il] = __float2bfloat16_rn(r.y);
    }
  }
  MmaGroupSync::sync();
  constexpr int kChunksPerRun = kRun * 2 / 16;  // 16-byte chunks per run
  for (int c = tid; c < TP * 2 * kChunksPerRun; c += kGemmThreads) {
    const int tok = c / (2 * kChunksPerRun), h = (c / kChunksPerRun) % 2, k = c % kChunksPerRun;
    bf16* dst = tok < p.H ? qkv_row(p, head, layer_rows, off, tok) : nullptr;
    if (dst != nullptr)
      reinterpret_cast<uint4*>(dst + i0 + h * half)[k] =
          reinterpret_cast<const uint4*>(stage + (tok * 2 + h) * kRun)[k];
  }
}

// O / down epilogue: the scaled partial product of this K slice, stored as slice
// k0 / klen of `part` (TP, W) for the tokens < H. Plain stores: red.add into one
// accumulator took 2.4-2.7 us of a 4.5 us task at TP = 64 (run 8, H100; 8 tasks adding into
// each address), and the norm that sums the slices reads as many sectors as it did.
template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ void splitk_epilogue(const ExpertParams& p, const Task& t, int tid,
                                                const float (&d)[TN / 2], const TaskScales& sc) {
  const int w = group_warp(tid), l = tid & 31, q4 = l & 3, tok0 = group_token0<TP>(tid);
  const float s = kPrefetchScales ? sc.s : gemm_scale(p, t.layer, t.op == kOProj ? kSiteO : kSiteDown);
  float* slice = p.part + static_cast<size_t>(t.k0 / t.klen) * TP * p.W;
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + 8 * j + 2 * q4 + e;
      if (tok >= p.H) continue;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int f = t.tile * kTileRows + 16 * w + (l >> 2) + 8 * h;
        __stcg(slice + static_cast<size_t>(tok) * p.W + f, d[4 * j + 2 * h + e] * s);
      }
    }
  }
  if (kNormBulk) fence_proxy_async_global();  // the next norm bulk-copies the slices
}

// gate/up epilogue: rows r0 / r0 + 8 are gate / up of MLP column f; GeGLU of the bf16
// outputs, FP8 with the down projection's input scale (elementwise.cu's geglu_fp8).
template <int TN>
__device__ __forceinline__ fp8 geglu_out(const float (&d)[TN / 2], int j, int e, float s,
                                         float inv_s) {
  const float g = bf16r(d[4 * j + e] * s), u = bf16r(d[4 * j + 2 + e] * s);
  return sat_fp8(gelu_tanh(g) * u * inv_s);
}

template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ void geglu_epilogue(const ExpertParams& p, const Task& t, int tid,
                                               const float (&d)[TN / 2], const TaskScales& sc) {
  const int w = group_warp(tid), l = tid & 31, q4 = l & 3, tok0 = group_token0<TP>(tid);
  const int f = t.tile * (kTileRows / 2) + 8 * w + (l >> 2);
  const float s = kPrefetchScales ? sc.s : gemm_scale(p, t.layer, kSiteGateUp);
  const float inv_s = kPrefetchScales ? sc.inv_s : 1.f / site_scale(p, t.layer, kSiteDown);
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + 8 * j + 2 * q4 + e;
      if (tok >= p.H) continue;
      p.act_mlp[act_offset<TP>(tok, f)] = geglu_out<TN>(d, j, e, s, inv_s);
    }
  }
  fence_proxy_async_global();  // act_mlp is read by bulk copies
}

// geglu_epilogue's math, staged: the tile's 32 columns are two 16-column chunks of
// act_mlp, contiguous in the chunk-major layout (2 TP 16 bytes from act_offset(0, first
// column)); every byte of that block is written (zero for the padded tokens) with 16-byte
// stores.
template <int TP, int TN = kGroupTokens<TP>>
__device__ __forceinline__ void geglu_epilogue_staged(const ExpertParams& p, const Task& t,
                                                      int tid, const float (&d)[TN / 2],
                                                      const TaskScales& sc, unsigned char* work) {
  const int w = group_warp(tid), l = tid & 31, q4 = l & 3, tok0 = group_token0<TP>(tid);
  const int fl = 8 * w + (l >> 2), f0 = t.tile * (kTileRows / 2);
  const float s = kPrefetchScales ? sc.s : gemm_scale(p, t.layer, kSiteGateUp);
  const float inv_s = kPrefetchScales ? sc.inv_s : 1.f / site_scale(p, t.layer, kSiteDown);
  fp8* stage = reinterpret_cast<fp8*>(work);
#pragma unroll
  for (int j = 0; j < TN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + 8 * j + 2 * q4 + e;
      stage[act_offset<TP>(tok, fl)] = tok < p.H ? geglu_out<TN>(d, j, e, s, inv_s) : fp8{};
    }
  }
  MmaGroupSync::sync();
  uint4* dst = reinterpret_cast<uint4*>(p.act_mlp + act_offset<TP>(0, f0));
  for (int c = tid; c < 2 * TP; c += kGemmThreads)
    dst[c] = reinterpret_cast<const uint4*>(stage)[c];
  fence_proxy_async_global();  // act_mlp is read by bulk copies
}

// Per-block state of the launch: its tables (block_tables), weight pages issued (the
// issuer's count) and consumed, activation tiles loaded (the parity of the activation barrier's next
// phase), and the prefix length, read once at the start (it is an input of the launch,
// constant in it) instead of by every QKV and attention task ahead of its first dependent
// load.
struct BlockState {
  BlockTables tables;
  int issued = 0;
  int consumed = 0;
  int act_loads = 0;
  int valid_len = 0;
};

// A task's launch inputs, loaded before its wait (norm_rows, rope_cs, and an attention
// task's prefix K/V tile: attention_prefetch).
template <int TP>
struct Prefetched {
  NormRows norm;
  RopeCs<kGroupTokens<TP>> rope;
  TaskScales scales;  // (kPrefetchScales)
  bool kv_loaded = false;
};

__device__ __forceinline__ bool is_norm(int op) {
  return op == kNormIn || op == kNormMid || op == kNormOut;
}


template <int TP>
__device__ __forceinline__ void gemm_task(const ExpertParams& p, const Task& t,
                                          unsigned char* work, uint64_t* act_bar,
                                          const WeightRing& ring, BlockState& state,
                                          const RopeCs<kGroupTokens<TP>>& rope,
                                          const TaskScales& pre_scales, TaskMarks& marks, int tid) {
  load_activation<TP>(p, t, work, act_bar, tid);
  float d[kGroupTokens<TP> / 2];
  if (tid < kGemmThreads)
    mma_tile<TP>(p, t, work, act_bar, state.act_loads & 1, ring, state.consumed, tid, d, marks);
  ++state.act_loads;
  state.consumed += task_pages(t);
  ConsumerSync::sync();  // the GEMM warpgroups' MMAs are complete: the pages and `work` are free
  if (!kRefillAfterSignal && tid == kPageIssuer)
    refill_pages(state.tables, p.sched.wpack, ring, state.issued, state.consumed);
  if (tid < kGemmThreads) {
    const TaskScales& sc = pre_scales;  // (used only under kPrefetchScales)
    if (kStagedEpilogue && t.op == kQkv)
      qkv_epilogue_staged<TP>(p, t, state.valid_len, tid, d, rope, sc, work);
    else if (kStagedEpilogue && t.op == kGateUp) geglu_epilogue_staged<TP>(p, t, tid, d, sc, work);
    else if (t.op == kQkv) qkv_epilogue<TP>(p, t, state.valid_len, tid, d, rope, sc);
    else if (t.op == kGateUp) geglu_epilogue<TP>(p, t, tid, d, sc);
    else splitk_epilogue<TP>(p, t, tid, d, sc);
    if ((wg_attn::kQTma || wg_attn::kKvTma) && t.op == kQkv)
      fence_proxy_async_global();  // q (and the K/V rows) are read by TMA
  }
}

// ---------------------------------------------------------------- attention
__device__ __forceinline__ attn_tiles::Params attention_params(const ExpertParams& p, int layer,
                                                               int valid_len) {
  attn_tiles::Params a{};
  const size_t layer_off = static_cast<size_t>(layer) * p.cache_rows * p.D;
  a.q = p.q;
  a.k = p.k_cache + layer_off;
  a.v = p.v_cache + layer_off;
  a.Lq = p.H; a.Lk = p.cache_rows; a.H = p.heads; a.Hkv = 1; a.G = p.heads; a.D = p.D;
  a.q_row = a.o_row = static_cast<long long>(p.heads) * p.D;
  a.k_row = a.v_row = p.D;
  a.scale = p.attn_scale;
  a.scale_log2 = p.attn_scale * attn_tiles::kLog2e;
  a.kv_len = p.valid_len;
  a.kv_len_value = valid_len;
  a.kv_len_add = p.H;
  a.key_mask = p.key_mask;
  a.splits = p.splits;
  a.ws_o = p.part_o;
  a.ws_lse = p.part_lse;
  a.batch = 1;
  return a;
}

// An attention task whose keys all lie in the prefix (rows < valid_len: written before
// the launch, never in it) issues its K/V tile's copies before its wait, so they land
// while the block waits for this layer's Q (run 9 on the H100: 2.2-3.1 us of an attention
// task went to loading Q, K and V after the wait). The split holding the step's own K/V
// rows loads them after the wait, as before, or (FLASH_RT_MK_ATTN_PARTIAL_PREFETCH) only
// those, its cached rows issued here. Returns whether copies were issued.
__device__ __forceinline__ bool attention_prefetch(const ExpertParams& p, const Task& t,
                                                   unsigned char* work, int valid_len, int tid) {
  const attn_tiles::Params a = attention_params(p, t.layer, valid_len);
  const attn_tiles::KeySpan<kAttnKeys> span(a, 0, 0, t.k0);
  if (span.blk_lo >= span.blk_hi) return false;
  if (span.kv_hi > valid_len) {  // the split holding the step's own rows
    if (!(wg_attn::kPartialPrefetch && wg_attn::kEnabled)) return false;
    wg_attn::load_kv_tile<AttnCfg::kThreads, true>(a, span, work, tid, INT_MIN, valid_len);
    attn_tiles::cp_async_commit();
    return true;  // (the tile loads the rest after the wait)
  }
  if (wg_attn::kEnabled)
    wg_attn::load_kv_tile<AttnCfg::kThreads>(a, span, work, tid);
  else
    attn_tiles::v2_load_kv_tile<kAttnHeadDim, kAttnKeys, AttnCfg::kThreads>(a, span, work,
                                                                            span.blk_lo, 0, tid);
  attn_tiles::cp_async_commit();
  return true;
}

// The attention tile's hooks: the task's inputs-in and math-done stamps, whether its K/V
// tile was prefetched, and (FLASH_RT_MK_ATTN_Q_TMA) its Q rows by TMA on the block's
// bulk-load barrier `bar` (load number `loads`).
struct AttentionMarks {
  const ExpertParams& p;
  TaskMarks& marks;
  int tid;
  bool kv_loaded;
  uint64_t* bar;
  int& loads;
  int layer;
  __device__ __forceinline__ void inputs_in() const { marks.inputs_in(p, tid); }
  __device__ __forceinline__ void math_done() const { marks.math_done(p, tid); }
  __device__ __forceinline__ bool first_tile_preloaded() const { return kv_loaded; }
  // Thread 0 issues by TMA (Swizzled128: one 8 KiB slice a box of 64 rows x 64 dims):
  // packed rows [m0, m0 + 64) of q into `dst_q` (kQTma), and unless `dst_k` is null the
  // layer's K and V cache rows [kv_row0, kv_row0 + 64) into dst_k / dst_v (kKvTma), all on
  // the block's bulk-load barrier. Returns whether Q comes so (else the tile loads it).
  __device__ __forceinline__ bool issue_tma(unsigned char* dst_q, int m0, unsigned char* dst_k,
                                          unsigned char* dst_v, int kv_row0) const {
    constexpr int kBoxes = kAttnHeadDim / wg_attn::kQBoxDims;
    constexpr uint32_t kTileBytes = attn_tiles::kBlockM * kAttnHeadDim * 2;
    if constexpr (!(wg_attn::kQTma || wg_attn::kKvTma)) return false;
    const bool kv = wg_attn::kKvTma && dst_k != nullptr;
    if (tid == 0 && (wg_attn::kQTma || kv)) {
      bulk_load_begin(bar, (wg_attn::kQTma ? kTileBytes : 0u) + (kv ? 2 * kTileBytes : 0u));
      const int row = layer * p.cache_rows + kv_row0;
      for (int b = 0; b < kBoxes; ++b) {
        const int off = b * wg_attn::Swizzled128::kSliceBytes, c0 = b * wg_attn::kQBoxDims;
        if (wg_attn::kQTma) tma_load_2d(dst_q + off, &p.q_map, c0, m0, bar);
        if (kv) {
          tma_load_2d(dst_k + off, &p.k_map, c0, row, bar);
          tma_load_2d(dst_v + off, &p.v_map, c0, row, bar);
        }
      }
    }
    return wg_attn::kQTma;
  }
  // Every thread: wait for what issue_tma issued (`kv`: whether it took K/V).
  __device__ __forceinline__ void wait_tma(bool kv) const {
    if (wg_attn::kQTma || (wg_attn::kKvTma && kv)) bulk_load_wait(bar, loads);
  }
};

__device__ __forceinline__ void attention_task(const ExpertParams& p, const Task& t,
                                               unsigned char* work, int valid_len, bool kv_loaded,
                                               TaskMarks& marks, uint64_t* bar, int& loads,
                                               int tid) {
  const attn_tiles::Params a = attention_params(p, t.layer, valid_len);
  const AttentionMarks hooks{p, marks, tid, kv_loaded, bar, loads, t.layer};
  if (wg_attn::kEnabled)
    wg_attn::attention_tile<AttnCfg::kThreads, ConsumerSync>(a, work, t.tile * attn_tiles::kBlockM,
                                                             t.k0, tid, hooks);
  else
    attn_tiles::attn_v2_tile<kAttnHeadDim, kAttnKeys, 2, 2, false, ConsumerSync, true,
                             AttentionMarks>(a, work, t.tile * attn_tiles::kBlockM, 0, 0, t.k0,
                                             tid, hooks);
  if (kCombineBulk) fence_proxy_async_global();  // the combine bulk-copies the partials
}

// A task's launch inputs, issued before its wait.
template <int TP>
__device__ __forceinline__ void prefetch_inputs(const ExpertParams& p, const Task& t, int tid,
                                                unsigned char* work, int valid_len,
                                                Prefetched<TP>& pre) {
  if (is_norm(t.op)) pre.norm = norm_rows(p, t, tid);
  else if (t.op == kQkv && tid < kGemmThreads) pre.rope = rope_cs<TP>(p, t, tid);  // epilogue threads
  else if (t.op == kAttn) pre.kv_loaded = attention_prefetch(p, t, work, valid_len, tid);
  if (kPrefetchScales && (is_norm(t.op) || tid < kGemmThreads)) pre.scales = task_scales(p, t);
}

// (kCombineBulk) One combine task from shared memory: its kRows rows of every split's
// partials and lse values by bulk copies on `bar` (load number `loads`), then each thread
// one (row, 4-column) item, with attn_combine_item's math in its order. False (nothing
// done): the task's rows or splits do not fit, the caller takes the L2 path.
template <int TP>
__device__ __forceinline__ bool combine_task_bulk(const ExpertParams& p, const attn_tiles::Params& a,
                                                  const Task& t, unsigned char* work,
                                                  uint64_t* bar, int& loads, int tid) {
  static_assert(kCombineCols == 4, "the bulk combine's items are float4 columns");
  constexpr int kD = kAttnHeadDim, kChunks = kD / kCombineCols;
  constexpr int kRows = kCombineItems / kChunks;  // rows a task covers
  constexpr uint32_t kPartBytes = kRows * kD * 4;
  const int total = p.H * p.heads, S = p.splits, r0 = t.tile * kRows;
  if (p.D != kD || total % kRows || r0 + kRows > total ||
      (reinterpret_cast<uintptr_t>(p.part_lse) & 15) ||  // (its own allocation: 16 B copies)
      S * (kPartBytes + kRows * 4) > static_cast<uint32_t>(kWorkBytes))
    return false;
  float* part = reinterpret_cast<float*>(work);
  float* lse = part + S * kRows * kD;
  const float sc = *a.o_scale;  // (a launch input: its round trip overlaps the copies)
  if (tid == 0) {
    bulk_load_begin(bar, S * (kPartBytes + kRows * 4));
    for (int s = 0; s < S; ++s) {
      const size_t row = static_cast<size_t>(s) * total + r0;
      bulk_g2s(part + s * kRows * kD, p.part_o + row * kD, kPartBytes, bar);
      bulk_g2s(lse + s * kRows, p.part_lse + row, kRows * 4, bar);
    }
  }
  bulk_load_wait(bar, loads);
  const int lr = tid / kChunks, c = tid % kChunks, row = r0 + lr;
  float mx = -INFINITY;
  for (int s = 0; s < S; ++s) mx = fmaxf(mx, lse[s * kRows + lr]);
  float acc[kCombineCols] = {}, wsum = 0.f;
  for (int s = 0; s < S; ++s) {
    const float l = lse[s * kRows + lr];
    const float w = l == -INFINITY ? 0.f : __expf(l - mx);
    wsum += w;
    const float4 x = *reinterpret_cast<const float4*>(part + (s * kRows + lr) * kD + kCombineCols * c);
    acc[0] += w * x.x; acc[1] += w * x.y; acc[2] += w * x.z; acc[3] += w * x.w;
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  const int tok = row % p.H, h = row / p.H;
  const long long col = static_cast<long long>(h) * kD + kCombineCols * c;
  const long long off = (col >> 4) * TP * 16 + tok * 16 + (col & 15);
#pragma unroll
  for (int i = 0; i < kCombineCols; i += 2)
    attn_tiles::store_out_pair(a, off + i, acc[i] * inv, acc[i + 1] * inv, sc);
  return true;
}

template <int TP>
__device__ __forceinline__ void combine_task(const ExpertParams& p, const Task& t, int tid,
                                             unsigned char* work, uint64_t* bar, int& loads) {
  attn_tiles::Params a = attention_params(p, t.layer, -1);  // (the combine reads no length)
  a.o8 = p.act_attn;
  a.o8_chunk_rows = TP;
  a.o8_via_bf16 = true;  // the sequence quantises the bf16 attention output
  a.o_scale = p.ascale + (t.layer * kSitesPerLayer + kSiteO) * kScaleStride;
  if (kCombineBulk && !wg_attn::kBf16Partials && combine_task_bulk<TP>(p, a, t, work, bar, loads, tid)) {
    fence_proxy_async_global();  // act_attn is read by bulk copies
    return;
  }
  // The split count is a template bound of the combine (its loads are unrolled to it and
  // clamped): the smallest instance that holds this launch's splits, not always 32.
  const long long item = static_cast<long long>(t.tile) * kCombineItems + tid;
  constexpr bool kB = wg_attn::kBf16Partials && wg_attn::kEnabled;
  if (p.splits <= 8) attn_tiles::attn_combine_item<8, 8, kCombineCols, kB>(a, item);
  else if (p.splits <= 16)
    attn_tiles::attn_combine_item<16, kCombineBatch, kCombineCols, kB>(a, item);
  else attn_tiles::attn_combine_item<kCombineMaxSplits, kCombineBatch, kCombineCols, kB>(a, item);
  fence_proxy_async_global();  // act_attn is read by bulk copies
}

}  // namespace mk
}  // namespace flash_rt
