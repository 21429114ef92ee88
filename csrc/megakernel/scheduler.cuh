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
  unsigned* counters;         // sync_words(n_counters, blocks) words, zero when allocated
  int n_counters;
};

// FLASH_RT_MK_BLOCK_FLAGS (build switch, default 0; 1 for an A/B): the counters become one
// word per (counter, block) that only that block writes (a st.release of its running
// count of signals on that counter, tagged with the launch's epoch), and a waiting block's
// poll warp loads all blocks' words at once and sums the counts of this epoch; after the
// launch the last block advances the epoch instead of zeroing anything. Why: with one
// counter a phase, 40-128 producers' read-modify-writes and up to 132 blocks' polls meet
// at one L2 address; run 17's probe put the counter protocol 0.87 us a boundary above an
// unsynchronised chain (bench/device/boundary_probe.cu, protocol block_flags). Measured
// (run 18, H100): slower, 775 vs 612 us a step at 2 views h50 (the probe: 2.6-2.9 vs
// 1.6-1.9 us a phase); the time goes to the poll warp's 132 loads and its fence. Off.
#ifndef FLASH_RT_MK_BLOCK_FLAGS
#define FLASH_RT_MK_BLOCK_FLAGS 0
#endif
constexpr bool kBlockFlags = FLASH_RT_MK_BLOCK_FLAGS != 0;
constexpr int kFlagCountBits = 16;  // a block's signals on one counter in a launch: < 65536
constexpr unsigned kFlagCountMask = (1u << kFlagCountBits) - 1u;
constexpr int kMaxFlagBlocks = 256;  // blocks whose words one poll warp loads at once (8 a lane)

// FLASH_RT_MK_POLL (build switch, default 0): which thread polls a task's counter and how.
// 0: thread 0 with an acquire load every poll; 1: warp 1's lane 0 (thread 0 issues the
// weight refills and a task's bulk input copies, which a fence on its warp may wait for),
// acquire loads; 2: warp 1's lane 0 with relaxed loads and one fence.acq_rel after the
// poll that succeeds (an acquire on every poll may invalidate the L1 each time).
// (Block flags always poll from warp 1, relaxed, then the fence.) Measured (run 18, H100,
// 2 views h50): 611.4 (1) and 665.7 (2) against 612.3 us a step: the fence costs more than
// acquire polls (the probe: +0.3 us a phase). 0 stays.
#ifndef FLASH_RT_MK_POLL
#define FLASH_RT_MK_POLL 0
#endif
static_assert(FLASH_RT_MK_POLL >= 0 && FLASH_RT_MK_POLL <= 2, "FLASH_RT_MK_POLL is 0, 1 or 2");
constexpr int kPollWarp = (FLASH_RT_MK_POLL != 0 || kBlockFlags) ? 1 : 0;
static_assert(kPollWarp * 32 < kConsumers, "the poll warp is a consumer warp");

// Words of the `counters` buffer a schedule of n_counters counters on `blocks` blocks
// needs: the counters and a finished-blocks count; with block flags a word per (counter,
// block), the finished-blocks count and the epoch.
__host__ __device__ constexpr long long sync_words(int n_counters, int blocks) {
  return kBlockFlags ? static_cast<long long>(n_counters) * blocks + 2 : n_counters + 1;
}
// Shared memory of the block's own signal counts (block flags: one 16-bit count a counter).
__host__ __device__ constexpr int sync_state_bytes(int n_counters) {
  return kBlockFlags ? (2 * n_counters + 15) / 16 * 16 : 0;
}

// What a block keeps of the launch's synchronisation (block flags only): this launch's
// tag and how many times the block has signalled each counter (thread 0's alone).
struct SyncState {
  unsigned tag = 0;
  uint16_t* counts = nullptr;
};

// Thread 0 and the poll warp: this launch's tag; thread 0 zeroes the block's counts
// (`counts`: sync_state_bytes of shared memory). After the grid dependency wait: the epoch
// is what the previous launch's last block left.
__device__ __forceinline__ SyncState sync_begin(const Schedule& s, unsigned char* counts, int tid) {
  SyncState st;
  if constexpr (kBlockFlags) {
    st.counts = reinterpret_cast<uint16_t*>(counts);
    if (tid == 0 || tid / 32 == kPollWarp) {
      const unsigned epoch = ld_relaxed(s.counters + static_cast<long long>(s.n_counters) * gridDim.x + 1);
      st.tag = epoch << kFlagCountBits;
    }
    if (tid == 0)
      for (int i = 0; i < s.n_counters; ++i) st.counts[i] = 0;
  }
  return st;
}

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

// A poll of a counter: an acquire load, or (Relaxed: FLASH_RT_MK_POLL=2) a relaxed one whose
// success the caller turns into an acquire with fence_acq_rel.
template <bool Relaxed>
__device__ __forceinline__ unsigned poll_load(const unsigned* c) {
  if constexpr (Relaxed) return ld_relaxed(c);
  else return ld_acquire(c);
}

template <bool Relaxed = false>
__device__ __forceinline__ void spin_until(const unsigned* c, unsigned target) {
  // (Staggered relaxed polls, four in flight ~128 ns apart, measured slower in run 10 on
  // the H100: 954 vs 899 us a step at 2 views h50, 673 vs 600 at 1 view h10.)
  const unsigned long long t0 = global_ns();
  while (poll_load<Relaxed>(c) < target) {
    if (global_ns() - t0 > kWaitLimitNs) __trap();
  }
}

// (block flags) The poll warp: until the blocks' words of counter `ctr` tagged with this
// launch's tag count `target` signals in all; every lane then fences (each made its own
// observations) before the block's barrier.
__device__ __forceinline__ void wait_block_flags(const Schedule& s, const SyncState& st, int ctr,
                                                 unsigned target, int lane) {
  constexpr int kPerLane = kMaxFlagBlocks / 32;
  const unsigned* words = s.counters + static_cast<long long>(ctr) * gridDim.x;
  const int blocks = static_cast<int>(gridDim.x);
  unsigned long long t0 = 0;
  for (;;) {
    unsigned w[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      w[j] = lane + 32 * j < blocks ? ld_relaxed(words + lane + 32 * j) : 0u;
    unsigned n = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      n += (w[j] & ~kFlagCountMask) == st.tag ? (w[j] & kFlagCountMask) : 0u;
#pragma unroll
    for (int o = 16; o; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
    if (n >= target) break;
    if (!t0) t0 = global_ns();
    else if (global_ns() - t0 > kWaitLimitNs) __trap();
  }
  fence_acq_rel();
}

__device__ __forceinline__ void wait_for(const Schedule& s, const SyncState& st, const Task& t,
                                         int tid) {
  const unsigned target = static_cast<unsigned>(t.wait_target);
  if constexpr (kBlockFlags) {
    if (tid / 32 == kPollWarp && t.wait_ctr >= 0) wait_block_flags(s, st, t.wait_ctr, target, tid & 31);
  } else if (tid == kPollWarp * 32 && t.wait_ctr >= 0) {
    const unsigned* c = s.counters + t.wait_ctr;
    constexpr bool kRelaxed = FLASH_RT_MK_POLL == 2;
    if (poll_load<kRelaxed>(c) < target) spin_until<kRelaxed>(c, target);
    if (kRelaxed) fence_acq_rel();  // the last poll's observation becomes an acquire
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

__device__ __forceinline__ void signal_done(const Schedule& s, const SyncState& st, const Task& t,
                                            int tid) {
  ConsumerSync::sync();
  if (tid == 0) {
    if (FLASH_RT_MK_SIGNAL_FENCE) __threadfence();
    if constexpr (kBlockFlags) {
      const unsigned n = ++st.counts[t.signal_ctr];
      st_release(s.counters + static_cast<long long>(t.signal_ctr) * gridDim.x + blockIdx.x,
                 st.tag | n);
    } else {
      red_release_add(s.counters + t.signal_ctr, 1u);
    }
  }
}

// The last block to finish leaves the words for the next launch: it zeroes every counter
// (block flags: advances the epoch, which retires every word of this launch at once). All
// others are past their last wait by then; the kernel boundary publishes the stores.
__device__ __forceinline__ void finish_launch(const Schedule& s, int tid) {
  ConsumerSync::sync();
  if (tid == 0) {
    __threadfence();
    const long long done_word = kBlockFlags ? static_cast<long long>(s.n_counters) * gridDim.x
                                            : s.n_counters;
    const unsigned done = atomicAdd(s.counters + done_word, 1u);
    if (done == gridDim.x - 1) {
      if constexpr (kBlockFlags) {
        s.counters[done_word + 1] += 1u;  // the epoch (only this block writes it)
        s.counters[done_word] = 0u;
      } else {
        for (int i = 0; i <= s.n_counters; ++i) s.counters[i] = 0u;
      }
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
