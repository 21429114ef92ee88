// The static schedule of the persistent action-expert kernel, as the host builds it
// (flash_rt/models/common/expert_schedule.py writes these arrays; its op codes and field
// order must match this file, which test_expert_schedule.py checks).
//
// Each block (one per SM) runs its own task list in order. A task waits until a counter in
// global memory reaches a target (acquire), runs, and adds 1 to its signal counter
// (release). GEMM tasks also consume weight pages: 64 output features x up to kPageK
// input features of FP8, packed at load in the order each block reads them, which the
// block bulk-copies into a shared-memory ring as soon as a slot frees (weights never
// depend on other blocks), so HBM keeps streaming while the block waits for its inputs.
#pragma once

#include <cstdint>

namespace flash_rt {
namespace mk {

enum Op : int32_t {
  kNormIn = 0,    // x (+= gate * acc) -> adaRMS -> FP8 act_w (the layer's QKV input)
  kQkv = 1,       // act_w @ Wqkv: RoPE, q -> q buffer, k/v -> cache rows valid_len + t
  kAttn = 2,      // one 64-row x one key-split tile of the decoder attention (partials)
  kCombine = 3,   // split-K combine of 256 (row, 4-column) items -> FP8 act_attn
  kOProj = 4,     // act_attn[:, k0:k0+klen] @ Wo tile -> partial k0 / klen of part
  kNormMid = 5,   // x += gate * (sum of O's partials) -> adaRMS -> FP8 act_w (gate/up input)
  kGateUp = 6,    // act_w @ Wgu tile (gate/up rows interleaved) -> GeGLU -> FP8 act_mlp
  kDown = 7,      // act_mlp[:, k0:k0+klen] @ Wdown tile -> partial k0 / klen of part
  kNormOut = 8,   // x += gate * (sum of down's partials) -> adaRMS -> bf16 xn (action-out in)
  kNumOps = 9,
};

// One task: 8 int32, in this order.
struct Task {
  int32_t op;
  int32_t layer;
  int32_t tile;         // GEMM: 64-feature output tile; norm: first token; attention: 64-row
                        // block; combine: first item / 256
  int32_t k0;           // GEMM: first input feature; attention: key split
  int32_t klen;         // GEMM: input features (a multiple of 32); its pages = ceil(klen / kPageK)
  int32_t wait_ctr;     // counter to wait on (-1: none)
  int32_t wait_target;  // ... until it is >= this
  int32_t signal_ctr;   // counter incremented when done
};
static_assert(sizeof(Task) == 8 * sizeof(int32_t), "Task is 8 int32");

constexpr int kTileRows = 64;        // output features per GEMM tile (wgmma M)
constexpr int kPageK = 512;          // input features per weight page
constexpr int kPageBytes = kTileRows * kPageK;  // 32 KiB of FP8
constexpr int kWeightSlots = 3;      // pages in the shared-memory ring
constexpr int kConsumerWarps = 8;    // 2 warpgroups: wgmma (group 0), all 8 for the rest
constexpr int kConsumers = kConsumerWarps * 32;
// No producer warp: a 9th warp makes the register file round up to 12 warps (168
// registers a thread, and the attention tile spills); thread 0 issues the copies instead.
constexpr int kThreads = kConsumers;
// Tokens per norm task. 1: a norm phase is latency-bound (run 3 on the H100: ~11 us a task
// at 4 tokens, its arrays spilled), so as many tasks as tokens, each with the fewest loads
// in flight before its one reduction. (Any count works.)
constexpr int kNormTokens = 1;
constexpr int kCombineItems = kConsumers;    // a combine task: one item per consumer thread
constexpr int kCombineCols = 4;              // columns per combine item (attn_combine_item)
// K splits of O / down whose partial products a norm sums (each its own slice of `part`).
constexpr int kMaxSplitK = 8;
// Trace stamps per task (%globaltimer, ns; only when the launch is given a trace buffer):
// wait start, run start, inputs in (GEMM: activation tile and weight pages landed; norm:
// loads done and summed; attention: Q, K and V landed; combine: = run start), math done
// (GEMM: MMAs complete; norm: the block's reduction done; attention: before the partials
// are stored; combine: = run start), body end, signalled.
constexpr int kTraceStamps = 6;
// Weight dequantisation scales per layer, and activation-scale sites per layer, in the
// pipeline's scale-table order: qkv, o, gate_up, down.
constexpr int kSitesPerLayer = 4;
// The sites, in order: the inputs of QKV, O, gate/up and down (a GEMM's weight scale has
// its input's index)
constexpr int kSiteQkv = 0, kSiteO = 1, kSiteGateUp = 2, kSiteDown = 3;
constexpr int kScaleStride = 4;  // floats per site in the scale table (16-byte slots)

}  // namespace mk
}  // namespace flash_rt
