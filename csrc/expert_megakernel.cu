// The persistent action-expert kernel: every layer of one denoising step of the Pi0.5
// action expert (adaRMS, QKV + RoPE + K/V write, decoder attention, O, gated residuals,
// gate/up + GeGLU, down; or Pi0's: RMSNorm and plain residuals, the PLAIN instance) in one launch, one block per SM, each block running the static
// task list the host built for it (flash_rt/models/common/expert_schedule.py), tasks ordered
// by counters in global memory, weights streamed into shared memory ahead of use.
//
// Layers: megakernel/scheduler.cuh (task loop, counters, weight ring: model-agnostic),
// megakernel/expert_tasks.cuh (the expert's task bodies), megakernel/arch_sm90.cuh (the
// Hopper instructions: the only arch-specific file). Thor and RTX keep the kernel
// sequence; on them the launcher refuses with a clear error.
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "common.h"
#include "megakernel/expert_tasks.cuh"
#include "ops.h"

namespace flash_rt {
namespace {

using namespace mk;

constexpr int kRingBytes = kWeightSlots * kPageBytes;
// mbarriers: the ring's, the activation tile's, the tables' (padded to 16-byte rows)
constexpr int kBarrierBytes = ((kWeightSlots + 2) * 8 + 15) / 16 * 16;
constexpr int kSmemBytes = kRingBytes + kWorkBytes + kBarrierBytes;  // + the block's tables
static_assert(kSmemBytes % 16 == 0, "the tables after the barriers are 16-byte rows");

// PLAIN: the residual kind (norm_task): false for Pi0.5's gated residuals, true for Pi0's.
template <int TP, bool PLAIN>
__global__ void __launch_bounds__(kThreads, 1) expert_megakernel_kernel(const __grid_constant__ ExpertParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* work = smem + kRingBytes;
  uint64_t* bars = reinterpret_cast<uint64_t*>(work + kWorkBytes);
  const WeightRing ring{smem, bars, l2_evict_first_policy()};
  uint64_t* act_bar = bars + kWeightSlots;
  uint64_t* table_bar = act_bar + 1;
  const int tid = threadIdx.x, block = blockIdx.x;
  BlockState state;
  if (tid == 0) {
    for (int i = 0; i < kWeightSlots; ++i) mbar_init(ring.full + i, 1);
    mbar_init(act_bar, 1);
    mbar_init(table_bar, 1);
    mbar_init_fence();
  }
  __syncthreads();
  // after the barriers: the block's signal counts (block flags), then its tables
  unsigned char* sync_smem = smem + kSmemBytes;
  state.tables = block_tables(p.sched, block, sync_smem + sync_state_bytes(p.sched.n_counters),
                              table_bar, tid);
  if (tid == kPageIssuer) refill_pages(state.tables, p.sched.wpack, ring, state.issued, 0);
  // Launched with programmatic dependent launch (ExpertMegakernel's `pdl`), this block may
  // have started while the previous launch drains: the tables and the first weight pages
  // above are load-time constants; everything below may read what earlier launches wrote.
  grid_dependency_wait();
  allow_dependents();  // the next step's blocks may take the SMs this grid's blocks leave
  state.valid_len = *p.valid_len;
  const SyncState sync = sync_begin(p.sched, sync_smem, tid);
  for (int i = 0; i < state.tables.n_tasks; ++i) {
    const Task t = state.tables.tasks[i];
    const unsigned long long t_wait = p.trace ? global_ns() : 0ull;
    Prefetched<TP> pre;
    prefetch_inputs<TP>(p, t, tid, work, state.valid_len, pre);
    wait_for(p.sched, sync, t, tid);
    const unsigned long long t_run = p.trace ? global_ns() : 0ull;
    TaskMarks marks{t_run, t_run};
    switch (t.op) {
      case kNormIn:
      case kNormMid:
      case kNormOut:
        norm_task<TP, PLAIN>(p, t, tid, reinterpret_cast<float*>(work), pre.norm, pre.scales,
                             marks, act_bar, state.act_loads);
        break;
      case kQkv:
      case kOProj:
      case kGateUp:
      case kDown: gemm_task<TP>(p, t, work, act_bar, ring, state, pre.rope, pre.scales, marks, tid);
        break;
      case kAttn:
        attention_task(p, t, work, state.valid_len, pre.kv_loaded, marks, act_bar,
                       state.act_loads, tid);
        break;
      case kCombine: combine_task<TP>(p, t, tid, work, act_bar, state.act_loads); break;
      default: __trap();
    }
    const unsigned long long t_body = p.trace ? global_ns() : 0ull;
    signal_done(p.sched, sync, t, tid);
    if (kRefillAfterSignal && tid == kPageIssuer)
      refill_pages(state.tables, p.sched.wpack, ring, state.issued, state.consumed);
    if (p.trace && tid == 0) {
      unsigned long long* row =
          p.trace + static_cast<size_t>(kTraceStamps) * (state.tables.first_task + i);
      row[0] = t_wait;
      row[1] = t_run;
      row[2] = marks.inputs;
      row[3] = marks.math;
      row[4] = t_body;
      row[5] = global_ns();
    }
  }
  finish_launch(p.sched, tid);
}

// (FLASH_RT_MK_ATTN_Q_TMA / _KV_TMA) A map the attention tiles load by: (rows, D) bf16,
// row-contiguous (q, or a K / V cache of all layers), boxes of 64 rows x kQBoxDims dims
// with the 128-byte swizzle (the tile's Swizzled128 layout), rows past `rows`
// zero-filled. The driver's encoder comes through the runtime (no link against libcuda).
void encode_rows_map(TmaMap& out, const bf16* q, long long rows, int D, const char* w) {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = nullptr;
  if (!encode) {
    cudaDriverEntryPointQueryResult found{};
    check_cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled",
                                                reinterpret_cast<void**>(&encode), 12000,
                                                cudaEnableDefault, &found),
               "expert_megakernel: cuTensorMapEncodeTiled");
    check(found == cudaDriverEntryPointSuccess && encode != nullptr, w,
          "the driver has no cuTensorMapEncodeTiled (FLASH_RT_MK_ATTN_Q_TMA needs CUDA 12+)");
  }
  static_assert(sizeof(TmaMap) == sizeof(CUtensorMap), "TmaMap holds a CUtensorMap");
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(D), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(D) * sizeof(bf16)};
  const cuuint32_t box[2] = {wg_attn::kQBoxDims, attn_tiles::kBlockM};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16*>(q), dims,
                            strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(r == CUDA_SUCCESS, w, "cuTensorMapEncodeTiled refused an attention map (error " +
                                  std::to_string(static_cast<int>(r)) + ")");
  std::memcpy(&out, &map, sizeof(map));
}

// The shared memory a launch may use on device `dev`: the opt-in maximum per block.
int max_block_smem(int dev) {
  int bytes = 0;
  check_cuda(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
             "expert_megakernel: shared memory per block");
  return bytes;
}

template <int TP, bool PLAIN>
void launch_tp(const ExpertParams& p, int blocks, int smem_limit, int smem, bool pdl,
               cudaStream_t s) {
  static bool attr_set = false;  // host-side, once per instance: safe before and in capture
  if (!attr_set) {
    check_cuda(cudaFuncSetAttribute(expert_megakernel_kernel<TP, PLAIN>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem_limit),
               "expert_megakernel: cudaFuncSetAttribute");
    int per_sm = 0;
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                   &per_sm, expert_megakernel_kernel<TP, PLAIN>, kThreads, kSmemBytes),
               "expert_megakernel: occupancy");
    check(per_sm >= 1, "expert_megakernel", "the kernel does not fit on one SM");
    attr_set = true;
  }
  launch_kernel(pdl, expert_megakernel_kernel<TP, PLAIN>,
                dim3(blocks), dim3(kThreads), static_cast<size_t>(smem), s, p);
}

template <bool PLAIN>
void launch_residual(const ExpertParams& p, i64 tp, int blocks, int smem_limit, int smem,
                     bool pdl, cudaStream_t s) {
  if (tp == 16) launch_tp<16, PLAIN>(p, blocks, smem_limit, smem, pdl, s);
  else if (tp == 32) launch_tp<32, PLAIN>(p, blocks, smem_limit, smem, pdl, s);
  else if (tp == 48) launch_tp<48, PLAIN>(p, blocks, smem_limit, smem, pdl, s);
  else launch_tp<64, PLAIN>(p, blocks, smem_limit, smem, pdl, s);
}

// Looks a key up in the binding's dicts, with an error naming it when absent.
template <typename V>
V need(const std::map<std::string, V>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) fail("expert_megakernel", std::string("missing argument '") + key + "'");
  return it->second;
}

// The device must be sm_90 and this module built for sm_90a (the wgmma primitives).
void check_device_arch() {
  require_sm90a("expert_megakernel", "wgmma", "use the kernel sequence: FLASH_RT_EXPERT=sequence");
}

}  // namespace

int expert_megakernel_smem_bytes() { return kSmemBytes; }

bool expert_megakernel_folds_io() { return kFoldIo; }

i64 expert_megakernel_sync_words(i64 counters, i64 blocks) {
  return sync_words(static_cast<int>(counters), static_cast<int>(blocks));
}

void expert_megakernel(const std::map<std::string, ptr_t>& ptrs,
                       const std::map<std::string, i64>& sizes, float eps, float attn_scale,
                       float theta, ptr_t stream) {
  const char* w = "expert_megakernel";
  ExpertParams p{};
  auto P = [&](const char* k, unsigned align, bool nullable = false) {
    const ptr_t v = need(ptrs, k);
    check_ptr(v, w, k, align, nullable);
    return v;
  };
  auto S = [&](const char* k) { return need(sizes, k); };
  p.sched.tasks = as_ptr<const Task>(P("tasks", 16));
  p.sched.task_start = as_ptr<const int>(P("task_start", 4));
  p.sched.pages = as_ptr<const long long>(P("pages", 16));
  p.sched.page_start = as_ptr<const int>(P("page_start", 4));
  p.sched.wpack = as_ptr<const unsigned char>(P("wpack", 128));
  p.sched.counters = as_ptr<unsigned>(P("counters", 4));
  p.wscale = as_ptr<const float>(P("wscale", 4));
  p.ascale = as_ptr<const float>(P("ascale", 16));
  p.mod = as_ptr<const float>(P("mod", 16));
  p.x = as_ptr<bf16>(P("x", 16));
  p.xn = as_ptr<bf16>(P("xn", 16));
  p.act_w = as_ptr<fp8>(P("act_w", 16));
  p.act_attn = as_ptr<fp8>(P("act_attn", 16));
  p.act_mlp = as_ptr<fp8>(P("act_mlp", 16));
  p.part = as_ptr<float>(P("part", 16));
  p.q = as_ptr<bf16>(P("q", 16));
  p.k_cache = as_ptr<bf16>(P("k_cache", 16));
  p.v_cache = as_ptr<bf16>(P("v_cache", 16));
  p.rope = as_ptr<const float>(P("rope", 16));
  p.positions = as_ptr<const int>(P("positions", 4));
  p.valid_len = as_ptr<const int>(P("valid_len", 4));
  p.key_mask = as_ptr<const unsigned char>(P("key_mask", 1, true));
  p.part_o = as_ptr<float>(P("part_o", 16));
  p.part_lse = as_ptr<float>(P("part_lse", 4));
  p.trace = ptrs.count("trace") ? as_ptr<unsigned long long>(P("trace", 8)) : nullptr;
  // the folded action I/O (0 / 0: the projections run outside the kernel)
  p.fold_in = static_cast<int>(S("fold_in"));
  p.fold_out = static_cast<int>(S("fold_out"));
  if (p.fold_in || p.fold_out) {
    check(kFoldIo, w,
          "fold_in / fold_out need a module built with FLASH_RT_MK_FOLD_IO=1 (this one was "
          "not: run the action projections outside the kernel)");
    p.A = static_cast<int>(S("action_dim"));
    const i64 steps = S("steps");
    check(p.A >= 8 && p.A <= kMaxActionDim && p.A % 8 == 0, w,
          "action_dim must be a multiple of 8 in [8, " + std::to_string(kMaxActionDim) + "]");
    check(steps >= 1, w, "steps must be >= 1");
    p.dt = static_cast<float>(-1.0 / static_cast<double>(steps));  // as the Euler launch's
    p.act_x = as_ptr<float>(P("act_x", 16));
    p.act_x_bf16 = as_ptr<bf16>(P("act_x_bf16", 16));
    if (p.fold_in) {
      p.act_in_w = as_ptr<const bf16>(P("act_in_w", 16));
      p.act_in_b = as_ptr<const bf16>(P("act_in_b", 2));
    }
    if (p.fold_out) {
      p.act_out_w = as_ptr<const bf16>(P("act_out_w", 16));
      p.act_out_b = as_ptr<const bf16>(P("act_out_b", 2));
    }
  }
  const i64 blocks = S("blocks"), tp = S("tpad");
  p.sched.n_counters = static_cast<int>(S("counters"));
  p.H = static_cast<int>(S("H"));
  p.W = static_cast<int>(S("W"));
  p.F = static_cast<int>(S("F"));
  p.heads = static_cast<int>(S("heads"));
  p.D = static_cast<int>(S("head_dim"));
  p.cache_rows = static_cast<int>(S("cache_rows"));
  p.rope_rows = static_cast<int>(S("rope_rows"));
  p.splits = static_cast<int>(S("splits"));
  p.depth = static_cast<int>(S("depth"));
  p.o_splits = static_cast<int>(S("o_splits"));
  p.down_splits = static_cast<int>(S("down_splits"));
  const i64 kv_heads = S("kv_heads"), max_klen = S("max_klen"), table_bytes = S("table_bytes");
  const i64 plain_residual = S("plain_residual");
  // programmatic dependent launch (optional key, default off; see the kernel's prologue)
  const bool pdl = sizes.count("pdl") && sizes.at("pdl") != 0;
  p.eps = eps;
  p.attn_scale = attn_scale;
  p.theta = theta;
  const char* swap = std::getenv("FLASH_RT_MK_DESC_SWAP");
  p.desc_swap = (swap && std::strcmp(swap, "1") == 0) ? 1 : 0;

  check(tp == 16 || tp == 32 || tp == 48 || tp == 64, w,
        "tpad must be 16, 32, 48 or 64 (horizon rounded up to 16), got " + std::to_string(tp));
  check(p.H >= 1 && p.H <= tp, w, "H must be in [1, tpad]");
  check(p.D == 256 && kv_heads == 1, w, "needs head_dim 256 and one KV head (Pi0.5's expert)");
  check(p.heads >= 1 && p.W % kConsumers == 0 && p.W <= kNormChunksMax * kConsumers, w,
        "W must be a multiple of " + std::to_string(kConsumers) + " and <= " +
            std::to_string(kNormChunksMax * kConsumers));
  check(p.F % 32 == 0, w, "F must be a multiple of 32");
  check(p.splits >= 2 && p.splits <= kCombineMaxSplits, w,
        "splits must be in [2, " + std::to_string(kCombineMaxSplits) + "]");
  check(p.cache_rows <= p.splits * attn_tiles::kBlockM, w,
        "splits * 64 must cover cache_rows (one key tile per split)");
  check(max_klen % 32 == 0 && tp * max_klen <= kWorkBytes, w,
        "max_klen must be a multiple of 32 with tpad * max_klen <= " + std::to_string(kWorkBytes));
  check(p.depth >= 1 && p.sched.n_counters >= 1, w, "depth and counters must be >= 1");
  check(plain_residual == 0 || plain_residual == 1, w,
        "plain_residual must be 0 (gated, Pi0.5) or 1 (plain, Pi0)");
  check(p.o_splits >= 1 && p.o_splits <= kMaxSplitK && p.down_splits >= 1 &&
            p.down_splits <= kMaxSplitK, w,
        "o_splits and down_splits must be in [1, " + std::to_string(kMaxSplitK) + "]");
  int dev = 0, sms = 0;
  check_cuda(cudaGetDevice(&dev), "expert_megakernel: cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
             "expert_megakernel: SM count");
  // All blocks must be resident at once (they wait on each other): one per SM at most.
  check(blocks >= 1 && blocks <= sms, w,
        "blocks (" + std::to_string(blocks) + ") must be in [1, SMs = " + std::to_string(sms) + "]");
  check(table_bytes >= 0 && table_bytes % 16 == 0, w,
        "table_bytes must be a multiple of 16 (the largest block's tasks and pages)");
  const i64 need_words = sync_words(p.sched.n_counters, static_cast<int>(blocks));
  check(S("counter_words") >= need_words, w,
        "the counters buffer (counter_words " + std::to_string(S("counter_words")) +
            ") must hold expert_megakernel_sync_words(counters, blocks) = " +
            std::to_string(need_words) + " words");
  check(!kBlockFlags || blocks <= kMaxFlagBlocks, w,
        "a build with FLASH_RT_MK_BLOCK_FLAGS runs at most " + std::to_string(kMaxFlagBlocks) +
            " blocks");
  check_device_arch();
  // Every block's tables go to shared memory (block_tables), after the ring, the work area
  // and the block's signal counts.
  const int smem_limit = max_block_smem(dev),
            smem = kSmemBytes + sync_state_bytes(p.sched.n_counters) + static_cast<int>(table_bytes);
  check(smem <= smem_limit, w,
        "the largest block's schedule tables (" + std::to_string(table_bytes) +
            " bytes) do not fit in shared memory beside the kernel's " +
            std::to_string(kSmemBytes) + " (limit " + std::to_string(smem_limit) +
            "): use more blocks");
  if (wg_attn::kQTma) encode_rows_map(p.q_map, p.q, p.H * p.heads, p.D, w);
  if (wg_attn::kKvTma) {
    const long long rows = static_cast<long long>(p.depth) * p.cache_rows;
    encode_rows_map(p.k_map, p.k_cache, rows, p.D, w);
    encode_rows_map(p.v_map, p.v_cache, rows, p.D, w);
  }
  cudaStream_t s = as_stream(stream);
  const int nb = static_cast<int>(blocks);
  if (plain_residual) launch_residual<true>(p, tp, nb, smem_limit, smem, pdl, s);
  else launch_residual<false>(p, tp, nb, smem_limit, smem, pdl, s);
  check_launch(w);
}

}  // namespace flash_rt
