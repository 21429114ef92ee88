// What one phase boundary of the persistent expert kernel costs, by protocol, with nothing
// else in the way. The question behind it (docs/performance.md, run 17): a layer of the
// kernel is ~31 us at 2 views h50 over 8 phases, and ~10 us of that are the boundaries
// themselves (the producer's release, the counter reaching the waiting block, the
// consumer's loads after its wait). A flag-in-data protocol (NCCL's "LL": every 8-byte word
// carries 4 bytes of data and a 4-byte phase flag, written by one 64-bit store, which is
// single-copy atomic) needs no release, no counter and no load after the wait: the
// consumer's loads are its wait. It doubles the bytes moved. This probe measures both on
// a synthetic chain of phases shaped like the kernel's (and the same chain with no
// synchronization at all, "none": what the data movement alone costs):
//   grid = one block per SM (256 threads, a large dynamic shared memory so that no two share
//   an SM), all resident; in every phase each block reads the whole buffer the previous
//   phase wrote (as a GEMM task reads its activation), reduces it, and writes its own slice
//   of the next buffer from that reduction (a real data dependency; two buffers by parity).
//   counter: plain stores; bar.sync; thread 0 red.release.gpu on the phase's counter; the
//            consumer's thread 0 spins on ld.acquire.gpu, bar.sync, then every thread loads
//            (ld.global.cg, 16 bytes, all issued before the first use), as the kernel does.
//   flags:   each word (flag = phase + 1) << 32 | data stored with st.relaxed.gpu.b64;
//            the consumer issues all its 16-byte loads (ld.relaxed.gpu), then re-loads only
//            the pairs whose flags are not yet the phase's.
// Every block folds each phase's reduction into a running hash; the host recomputes the
// chain and checks every block's hash (a consumer that read a stale word fails the check).
// Per-phase time = (time of P2 phases - time of P1 phases) / (P2 - P1): launch excluded.
// Measured (H100, 2026-12-07, docs/performance.md run 17): counters 1.62-1.91 us a phase,
// ~0.87 over the unsynchronised chain; flags 3.9-8.5 us (every thread polling): slower.
// Run 18 (H100): block_flags 2.6-2.9 and counter_relaxed_poll 1.9-2.2 us a phase, counters
// 1.6-1.9 again: the kernel's protocol is the fastest of the five.
//   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/boundary_probe bench/device/boundary_probe.cu
//   /tmp/boundary_probe            (one JSON object on stdout)
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "../../csrc/megakernel/gpu_scope_sync.cuh"
#include "probe_common.cuh"

namespace {

constexpr int kThreads = 256;
const char* const kProtocols[] = {"counter", "flags", "none", "block_flags", "counter_relaxed_poll"};
constexpr int kNumProtocols = 5;
constexpr int kMaxVecs = 16;  // 16-byte loads a thread holds at once (per pass)

using probe_common::mix;
// The value of word i (of the whole buffer) in phase p, from the previous phase's reduction.
__host__ __device__ inline uint32_t word_value(uint32_t prev, int i, int p) {
  return mix(prev ^ (static_cast<uint32_t>(i) * 0x9e3779b9U) ^ static_cast<uint32_t>(p));
}

using probe_common::now_ns;
using probe_common::spin_expired;
// the kernel's own primitives
__device__ inline void red_release(unsigned* p) { flash_rt::mk::red_release_add(p, 1u); }
using flash_rt::mk::fence_acq_rel;
using flash_rt::mk::ld_relaxed;
using flash_rt::mk::st_release;
__device__ inline void st_relaxed_b64(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ inline void ld_relaxed_v2(const unsigned long long* p, unsigned long long& a,
                                     unsigned long long& b) {
  asm volatile("ld.relaxed.gpu.global.v2.b64 {%0, %1}, [%2];" : "=l"(a), "=l"(b) : "l"(p) : "memory");
}

// Both 8-byte words of a pair carry phase `want`'s flag (flags protocol).
__device__ inline bool pair_ready(unsigned long long x, unsigned long long y, unsigned want) {
  return static_cast<unsigned>(x >> 32) == want && static_cast<unsigned>(y >> 32) == want;
}

// The block's xor of every thread's value (all threads get it).
__device__ inline uint32_t block_xor(uint32_t v, uint32_t* red) {
  return probe_common::block_reduce<probe_common::XorOp, kThreads>(v, red);
}

struct Args {
  int phases;
  int words;  // of the whole buffer (blocks x slice), a multiple of 4
  int slice;  // words a block writes each phase
  uint32_t* buf32;            // counter protocol: [2][words]
  unsigned long long* buf64;  // flag protocol: [2][words]
  unsigned* counters;         // [phases], zero at launch
  unsigned* block_flag;       // [blocks], zero at launch: the last phase each block finished, + 1
  uint32_t* hash_out;         // [blocks]
  int* error;                 // a spin that timed out
};

// Proto: 0 counter, 1 flags, 2 none (the counter path without its wait and release: the
// data movement and the reductions alone, its values unchecked: the floor both are above),
// 3 block_flags: the counter path with one flag word per producer block instead of one
// counter all of them add to (st.release of the phase number; the consumer's first warp
// polls all blocks' words with relaxed loads, a lane per 1-8 blocks, all in flight at
// once, then fence.acq_rel and the block's barrier): no read-modify-write of one address
// by 132 producers.
// 4 counter_relaxed_poll: the counter protocol whose waiting thread polls with relaxed
// loads and makes the successful one an acquire with one fence.acq_rel (the kernel's
// FLASH_RT_MK_POLL=2), instead of an acquire load on every poll.
template <int Proto>
__global__ void __launch_bounds__(kThreads, 1) probe(Args a) {
  __shared__ uint32_t red[kThreads / 32];
  constexpr bool Flags = Proto == 1;
  const int tid = threadIdx.x, b = blockIdx.x;
  uint32_t prev = 0, hash = 0;
  for (int p = 0; p < a.phases; ++p) {
    // ---- consume the previous phase's buffer (phase 0 starts from prev = 0)
    if (p > 0) {
      uint32_t acc = 0;
      if (!Flags) {
        if (Proto == 3 && tid < 32) {
          // every lane's flags loaded at once (relaxed), until the whole warp saw them all;
          // then one fence makes those observations acquires
          constexpr int kPerLane = 8;  // up to 256 blocks
          unsigned long long t0 = 0;
          bool seen;
          do {
            unsigned v[kPerLane];
#pragma unroll
            for (int j = 0; j < kPerLane; ++j)
              v[j] = tid + 32 * j < static_cast<int>(gridDim.x) ? ld_relaxed(a.block_flag + tid + 32 * j) : ~0u;
            seen = true;
#pragma unroll
            for (int j = 0; j < kPerLane; ++j) seen = seen && v[j] >= static_cast<unsigned>(p);
            if (!t0) t0 = now_ns();
            else if (spin_expired(t0, a.error)) seen = true;
          } while (!__all_sync(0xffffffffu, seen));
          fence_acq_rel();
        }
        if (Proto == 0 && tid == 0) probe_common::spin_acquire(a.counters + p - 1, gridDim.x, a.error);
        if (Proto == 4 && tid == 0) {
          if (ld_relaxed(a.counters + p - 1) < gridDim.x) {
            const unsigned long long t0 = now_ns();
            while (ld_relaxed(a.counters + p - 1) < gridDim.x) {
              if (spin_expired(t0, a.error)) break;
            }
          }
          fence_acq_rel();
        }
        __syncthreads();
        const uint4* src = reinterpret_cast<const uint4*>(a.buf32 + ((p - 1) & 1) * a.words);
        const int nv = a.words / 4;
        for (int base = tid; base < nv; base += kThreads * kMaxVecs) {
          uint4 v[kMaxVecs];
#pragma unroll
          for (int j = 0; j < kMaxVecs; ++j)
            if (base + j * kThreads < nv) v[j] = __ldcg(src + base + j * kThreads);
#pragma unroll
          for (int j = 0; j < kMaxVecs; ++j)
            if (base + j * kThreads < nv) acc ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
        }
      } else {
        const unsigned long long* src = a.buf64 + ((p - 1) & 1) * a.words;
        const unsigned want = static_cast<unsigned>(p);  // the flag phase p - 1 wrote
        const int np = a.words / 2;
        for (int base = tid; base < np; base += kThreads * kMaxVecs) {
          unsigned long long x[kMaxVecs], y[kMaxVecs];
#pragma unroll
          for (int j = 0; j < kMaxVecs; ++j)
            if (base + j * kThreads < np) ld_relaxed_v2(src + 2 * (base + j * kThreads), x[j], y[j]);
#pragma unroll
          for (int j = 0; j < kMaxVecs; ++j) {
            if (base + j * kThreads >= np) continue;
            if (!pair_ready(x[j], y[j], want)) {
              const unsigned long long t0 = now_ns();
              do {
                if (spin_expired(t0, a.error)) break;
                ld_relaxed_v2(src + 2 * (base + j * kThreads), x[j], y[j]);
              } while (!pair_ready(x[j], y[j], want));
            }
            acc ^= static_cast<uint32_t>(x[j]) ^ static_cast<uint32_t>(y[j]);
          }
        }
      }
      prev = block_xor(acc, red);
      hash = hash * 31u + prev;
    }
    // ---- produce this phase's slice
    const int w0 = b * a.slice;
    if (!Flags) {
      uint32_t* dst = a.buf32 + (p & 1) * a.words;
      for (int i = tid; i < a.slice; i += kThreads) dst[w0 + i] = word_value(prev, w0 + i, p);
      __syncthreads();
      if ((Proto == 0 || Proto == 4) && tid == 0) red_release(a.counters + p);
      if (Proto == 3 && tid == 0) st_release(a.block_flag + b, static_cast<unsigned>(p + 1));
    } else {
      unsigned long long* dst = a.buf64 + (p & 1) * a.words;
      const unsigned long long flag = static_cast<unsigned long long>(p + 1) << 32;
      for (int i = tid; i < a.slice; i += kThreads)
        st_relaxed_b64(dst + w0 + i, flag | word_value(prev, w0 + i, p));
    }
  }
  if (tid == 0) a.hash_out[b] = hash;
}

// The chain on the host: every block's expected hash (all equal).
uint32_t expected_hash(int phases, int words) {
  std::vector<uint32_t> cur(words);
  uint32_t prev = 0, hash = 0;
  for (int p = 0; p < phases; ++p) {
    if (p > 0) {
      uint32_t acc = 0;
      for (uint32_t w : cur) acc ^= w;
      prev = acc;
      hash = hash * 31u + prev;
    }
    for (int i = 0; i < words; ++i) cur[i] = word_value(prev, i, p);
  }
  return hash;
}

using probe_common::ok;

// p50 of `reps` launches of `phases` phases, in us; false on an error.
bool time_launch(int proto, Args a, int blocks, int smem, int reps, double& p50, bool& correct) {
  const uint32_t want = expected_hash(a.phases, a.words);
  auto reset = [&] {
    cudaMemset(a.counters, 0, sizeof(unsigned) * a.phases);
    cudaMemset(a.block_flag, 0, sizeof(unsigned) * blocks);
    cudaMemset(a.buf64, 0, sizeof(unsigned long long) * 2 * a.words);
    cudaMemset(a.hash_out, 0, sizeof(uint32_t) * blocks);
  };
  auto launch = [&] {
    if (proto == 1) probe<1><<<blocks, kThreads, smem>>>(a);
    else if (proto == 2) probe<2><<<blocks, kThreads, smem>>>(a);
    else if (proto == 3) probe<3><<<blocks, kThreads, smem>>>(a);
    else if (proto == 4) probe<4><<<blocks, kThreads, smem>>>(a);
    else probe<0><<<blocks, kThreads, smem>>>(a);
  };
  auto check = [&] { return probe_common::hashes_match(a.hash_out, blocks, a.error, want); };
  return probe_common::time_launches(reps, reset, launch, check, p50, correct);
}

}  // namespace

int main() {
  probe_common::ResidentGrid g;
  if (!probe_common::resident_grid(g, 1024)) return 1;
  const cudaDeviceProp& prop = g.prop;
  const int sms = g.blocks, smem = g.smem;
  cudaFuncSetAttribute(probe<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaFuncSetAttribute(probe<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaFuncSetAttribute(probe<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaFuncSetAttribute(probe<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaFuncSetAttribute(probe<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int blocks = sms;
  // Bytes of data a consumer reads each phase: a norm's inputs (~4-8 KB), a GEMM task's
  // activation tile (TP x klen FP8: 64 x 512 = 32 KB), a whole activation (50 x 1024 = 50 KB).
  const int slices[] = {16, 64, 96};
  const int short_phases = 16, long_phases = 272, reps = 21;
  const int max_words = blocks * 96;
  Args a{};
  uint32_t* hash = nullptr;
  int* err = nullptr;
  unsigned long long* buf = nullptr;
  unsigned* ctr = nullptr;
  unsigned* bflag = nullptr;
  if (!ok(cudaMalloc(&buf, sizeof(unsigned long long) * 2 * max_words), "malloc") ||
      !ok(cudaMalloc(&ctr, sizeof(unsigned) * long_phases), "malloc") ||
      !ok(cudaMalloc(&bflag, sizeof(unsigned) * blocks), "malloc") ||
      !ok(cudaMalloc(&hash, sizeof(uint32_t) * blocks), "malloc") ||
      !ok(cudaMalloc(&err, sizeof(int)), "malloc"))
    return 1;
  cudaMemset(err, 0, sizeof(int));
  std::printf("{\"device\": \"%s\", \"sms\": %d, \"threads\": %d, \"reps\": %d, \"phases\": [%d, %d], \"runs\": [",
              prop.name, sms, kThreads, reps, short_phases, long_phases);
  bool first = true;
  for (int slice : slices) {
    for (int proto = 0; proto < kNumProtocols; ++proto) {
      a.words = blocks * slice;
      a.slice = slice;
      a.buf64 = buf;
      a.buf32 = reinterpret_cast<uint32_t*>(buf);
      a.counters = ctr;
      a.block_flag = bflag;
      a.hash_out = hash;
      a.error = err;
      double t_short = 0, t_long = 0;
      bool c1 = false, c2 = false;
      a.phases = short_phases;
      if (!time_launch(proto, a, blocks, smem, reps, t_short, c1)) return 1;
      a.phases = long_phases;
      if (!time_launch(proto, a, blocks, smem, reps, t_long, c2)) return 1;
      const int data_bytes = a.words * 4;
      std::printf("%s{\"protocol\": \"%s\", \"data_bytes_read_per_block\": %d, \"bytes_moved_per_block\": %d, "
                  "\"us_per_phase\": %.4f, \"launch_us\": [%.2f, %.2f], \"correct\": %s}",
                  first ? "" : ", ", kProtocols[proto], data_bytes,
                  proto == 1 ? 2 * data_bytes : data_bytes,
                  (t_long - t_short) / (long_phases - short_phases), t_short, t_long,
                  proto == 2 ? "null" : (c1 && c2) ? "true" : "false");
      first = false;
    }
  }
  std::printf("]}\n");
  return 0;
}
