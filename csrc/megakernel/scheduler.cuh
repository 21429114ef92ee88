// Model-agnostic machinery of the persistent kernel: per-block task lists, dependency
// counters in global memory (acquire / release), and the weight-page ring that one thread
// refills with bulk copies as soon as a page is consumed. The task bodies (expert_tasks.cuh) only
// see "my inputs are ready" and "here is my next weight page".
//
// Memory-model pattern (the one cooperative groups' grid sync uses): a task's threads
// write, meet at a barrier, then one thread fences and adds to the counter with release
// semantics; a waiting block's thread 0 spins with acquire loads, then meets its other
// consumer threads at a barrier before they read. Data written by other blocks during the
// launch is read through L2 (cp.async.cg, __ldcg) or atomics, never through a stale L1.
#pragma once

#include <cstdint>

#include "arch_sm90.cuh"
#include "gpu_scope_sync.cuh"
#include "task_table.h"

namespace flash_rt {
namespace mk {

struct Schedule {
  const Task* tasks;          // all blocks' tasks, block after block
  const int* task_start;      // (blocks + 1,): block b runs tasks [task_start[b], task_start[b+1])
  const long long* pages;     // (pages, 2): byte offset into wpack, bytes
  const int* page_start;      // (blocks + 1,) likewise for the weight pages, in consumption order
  const unsigned char* wpack; // packed FP8 weight tiles
  unsigned* counters;         // (n_counters + 1,): zero at launch; the last one counts finished blocks
  int n_counters;
};

// One block's rows of the schedule: its tasks and its weight pages (offset, bytes).
struct BlockTables {
  const Task* tasks;
  const long long* pages;
  int n_tasks, n_pages;
  int first_task;  // index of tasks[0] in the whole schedule (the trace's row)
};

// The block's tables, brought into shared memory `dst` by two bulk copies that thread 0
// issues on `bar` (a fresh mbarrier; every thread waits). A task's row and a refill's page
// entries were global loads on every task's path, and after a launch's 300 MB weight stream
// has gone through L2 they come from HBM. The host sizes the launch's shared memory for
// the largest block's tables (and refuses schedules whose tables do not fit). Always in
// shared memory: a pointer that may be global or shared made ptxas serialise the wgmma
// sequence (C7520).
__device__ __forceinline__ BlockTables block_tables(const Schedule& s, int block,
                                                    unsigned char* dst, uint64_t* bar, int tid) {
  const int t0 = s.task_start[block], p0 = s.page_start[block];
  const int n_tasks = s.task_start[block + 1] - t0, n_pages = s.page_start[block + 1] - p0;
  const uint32_t task_bytes = n_tasks * static_cast<uint32_t>(sizeof(Task));
  const uint32_t page_bytes = n_pages * static_cast<uint32_t>(2 * sizeof(long long));
  if (tid == 0) {
    mbar_arrive_expect_tx(bar, task_bytes + page_bytes);
    if (task_bytes) bulk_g2s(dst, s.tasks + t0, task_bytes, bar);
    if (page_bytes) bulk_g2s(dst + task_bytes, s.pages + 2 * p0, page_bytes, bar);
  }
  mbar_wait(bar, 0);
  return {reinterpret_cast<const Task*>(dst), reinterpret_cast<const long long*>(dst + task_bytes),
          n_tasks, n_pages, t0};
}

// The block's barrier (named barrier 1; every thread of the block is a consumer).
struct ConsumerSync {
  __device__ __forceinline__ static void sync() {
    asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory");
  }
};

// A wait that cannot be satisfied (a schedule bug, or blocks that are not all resident)
// traps after this long instead of hanging the GPU: the launch then fails with an error.
constexpr unsigned long long kWaitLimitNs = 5ull * 1000 * 1000 * 1000;

__device__ __forceinline__ void spin_until(const unsigned* c, unsigned target) {
  // (Staggered relaxed polls, four in flight ~128 ns apart, measured slower in run 10 on
  // the H100: 954 vs 899 us a step at 2 views h50, 673 vs 600 at 1 view h10.)
  const unsigned long long t0 = global_ns();
  while (ld_acquire(c) < target) {
    if (global_ns() - t0 > kWaitLimitNs) __trap();
  }
}

__device__ __forceinline__ void wait_for(const Schedule& s, const Task& t, int tid) {
  if (tid == 0 && t.wait_ctr >= 0) {
    const unsigned* c = s.counters + t.wait_ctr;
    const unsigned target = static_cast<unsigned>(t.wait_target);
    if (ld_acquire(c) < target) spin_until(c, target);
  }
  ConsumerSync::sync();
}

// FLASH_RT_MK_SIGNAL_FENCE=1 adds a fence.sc (__threadfence) before the release add, as
// the cooperative-groups grid sync does. Not needed: red.release is itself a release
// (fence.acq_rel + red), and the barrier before it orders the block's writes before thread
// 0's release (PTX memory model: barriers synchronize). Off by default since the A/B on the
// H100 (run 7, docs/performance.md): 1026 vs 1082 us a step without / with it (2 views h50),
// 695 vs 743 (1 view h10), the kernel tests passing in both builds.
#ifndef FLASH_RT_MK_SIGNAL_FENCE
#define FLASH_RT_MK_SIGNAL_FENCE 0
#endif

__device__ __forceinline__ void signal_done(const Schedule& s, const Task& t, int tid) {
  ConsumerSync::sync();
  if (tid == 0) {
    if (FLASH_RT_MK_SIGNAL_FENCE) __threadfence();
    red_release_add(s.counters + t.signal_ctr, 1u);
  }
}

// The last block to finish zeroes every counter for the next launch (all others are past
// their last wait by then; the kernel boundary publishes the zeros).
__device__ __forceinline__ void finish_launch(const Schedule& s, int tid) {
  ConsumerSync::sync();
  if (tid == 0) {
    __threadfence();
    const unsigned done = atomicAdd(s.counters + s.n_counters, 1u);
    if (done == gridDim.x - 1) {
      for (int i = 0; i <= s.n_counters; ++i) s.counters[i] = 0u;
      __threadfence();
    }
  }
}

// The weight ring: kWeightSlots pages of kPageBytes; full[i] completes when the copy into
// slot i has landed. Pages are consumed in the order they are issued, and only one thread
// (kPageIssuer) issues them, so a slot is free exactly when issued - consumed < kWeightSlots
// (no "empty" barriers). A refill is issued after the block's barrier that follows the
// MMAs reading the slot (wgmma.wait_group by every reader), so it never overwrites a page
// still in use.
struct WeightRing {
  unsigned char* base;
  uint64_t* full;
  uint64_t policy;  // L2 policy of the page copies (l2_evict_first_policy; the issuer's)

  __device__ __forceinline__ const unsigned char* wait_page(int n) const {
    const int slot = n % kWeightSlots;
    mbar_wait(full + slot, static_cast<uint32_t>((n / kWeightSlots) & 1));
    return base + slot * kPageBytes;
  }

  __device__ __forceinline__ const unsigned char* page(int n) const {
    return base + (n % kWeightSlots) * kPageBytes;
  }
};

// FLASH_RT_MK_WEIGHT_EVICT_FIRST=0 streams the weight pages with the default L2 policy
// (the A/B of the hint: AB_FLAGS=-DFLASH_RT_MK_WEIGHT_EVICT_FIRST=0 megakernel_session.sh ab).
#ifndef FLASH_RT_MK_WEIGHT_EVICT_FIRST
#define FLASH_RT_MK_WEIGHT_EVICT_FIRST 1
#endif

// When the weight-page copies are issued: after the task's release, not between its MMAs
// and its epilogue. The release compiles to MEMBAR.ALL.GPU + RED on thread 0, the issuer,
// and that barrier waits for the warp's bulk copies in flight, so a refill before it
// delayed every GEMM task's signal (run 10 on the H100: 765 vs 796 us a step at 2 views
// h50, 560 vs 575 at 1 view h10; GEMM signals were 0.8-1.7 us against 0.4 for a norm).
// FLASH_RT_MK_REFILL_AFTER_SIGNAL=0 restores the old order (A/B). Issuing from warp 4
// instead (idle during the MMAs) measured 787 / 574 us in the same call: not kept.
#ifndef FLASH_RT_MK_REFILL_AFTER_SIGNAL
#define FLASH_RT_MK_REFILL_AFTER_SIGNAL 1
#endif
constexpr int kPageIssuer = 0;
constexpr bool kRefillAfterSignal = FLASH_RT_MK_REFILL_AFTER_SIGNAL != 0;

// The issuer: this block's next pages into every free slot (non-blocking).
__device__ __forceinline__ void refill_pages(const BlockTables& bt, const unsigned char* wpack,
                                             const WeightRing& ring, int& issued, int consumed) {
  for (; issued < bt.n_pages && issued - consumed < kWeightSlots; ++issued) {
    const int slot = issued % kWeightSlots;
    const long long off = bt.pages[2 * issued];
    const uint32_t bytes = static_cast<uint32_t>(bt.pages[2 * issued + 1]);
    mbar_arrive_expect_tx(ring.full + slot, bytes);
    if (FLASH_RT_MK_WEIGHT_EVICT_FIRST)
      bulk_g2s_hinted(ring.base + slot * kPageBytes, wpack + off, bytes, ring.full + slot,
                      ring.policy);
    else
      bulk_g2s(ring.base + slot * kPageBytes, wpack + off, bytes, ring.full + slot);
  }
}

}  // namespace mk
}  // namespace flash_rt
