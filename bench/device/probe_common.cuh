// What the synchronisation probes (boundary_probe.cu, splitk_finish_probe.cu) share: the
// hash their chains fold values with, the bounded spin on a counter, the block reductions,
// the resident grid (one block per SM, as the persistent kernel) and the p50 of repeated,
// checked launches.
#pragma once

#include <cuda_runtime.h>

#include "../../csrc/megakernel/gpu_scope_sync.cuh"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace probe_common {

__host__ __device__ inline uint32_t mix(uint32_t x) {
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}

// A spin gives up after this long and flags the launch, instead of hanging the GPU.
constexpr unsigned long long kSpinLimitNs = 2ull * 1000 * 1000 * 1000;

__device__ inline unsigned long long now_ns() { return flash_rt::mk::global_ns(); }

// A spin that started at t0 has waited too long: record it (the launch then reports a
// failure instead of hanging the GPU) and tell the caller to stop waiting.
__device__ inline bool spin_expired(unsigned long long t0, int* error) {
  if (now_ns() - t0 <= kSpinLimitNs) return false;
  atomicExch(error, 1);
  return true;
}

// The calling thread polls *ctr with acquire loads until it reaches target (or the spin
// expires): the persistent kernel's wait, without its block barrier.
__device__ inline void spin_acquire(const unsigned* ctr, unsigned target, int* error) {
  if (flash_rt::mk::ld_acquire(ctr) >= target) return;
  const unsigned long long t0 = now_ns();
  while (flash_rt::mk::ld_acquire(ctr) < target) {
    if (spin_expired(t0, error)) break;
  }
}

struct XorOp {
  __device__ static uint32_t apply(uint32_t a, uint32_t b) { return a ^ b; }
};
struct SumOp {
  __device__ static uint32_t apply(uint32_t a, uint32_t b) { return a + b; }
};

// The block's reduction of every thread's value (all threads get it); `red` holds a word
// per warp.
template <typename Op, int Threads>
__device__ inline uint32_t block_reduce(uint32_t v, uint32_t* red) {
  for (int o = 16; o; o >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red is free (its last readers are past this barrier)
  if (lane == 0) red[warp] = v;
  __syncthreads();
  uint32_t s = red[0];
  for (int w = 1; w < Threads / 32; ++w) s = Op::apply(s, red[w]);
  return s;
}

inline bool ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("{\"error\": \"%s: %s\"}\n", what, cudaGetErrorString(e));
  return false;
}

// One block per SM with the opt-in shared memory less `spare` bytes, so no two blocks
// share an SM; the kernels must be given `smem` as their dynamic shared memory maximum.
struct ResidentGrid {
  cudaDeviceProp prop{};
  int blocks = 0, smem = 0;
};

inline bool resident_grid(ResidentGrid& g, int spare) {
  int smem_max = 0;
  if (!ok(cudaGetDeviceProperties(&g.prop, 0), "properties")) return false;
  cudaDeviceGetAttribute(&g.blocks, cudaDevAttrMultiProcessorCount, 0);
  cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
  g.smem = smem_max - spare;
  return true;
}

// p50 (us) of `reps` timed launches: reset() before each (untimed), launch() between two
// events, check() after it (false: a wrong result or a timed-out spin). False on a CUDA
// error (printed as the JSON output).
template <typename Reset, typename Launch, typename Check>
bool time_launches(int reps, Reset reset, Launch launch, Check check, double& p50, bool& correct) {
  std::vector<double> t;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  correct = true;
  for (int r = 0; r < reps; ++r) {
    reset();
    cudaEventRecord(e0);
    launch();
    cudaEventRecord(e1);
    if (!ok(cudaEventSynchronize(e1), "launch")) return false;
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms * 1e3);
    correct = check() && correct;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  p50 = t[t.size() / 2];
  return true;
}

// Every block's hash equals `want` and no spin timed out (`error` on the device).
inline bool hashes_match(const uint32_t* hash_out, int blocks, const int* error, uint32_t want) {
  std::vector<uint32_t> h(blocks);
  int err = 0;
  cudaMemcpy(h.data(), hash_out, sizeof(uint32_t) * blocks, cudaMemcpyDeviceToHost);
  cudaMemcpy(&err, error, sizeof(int), cudaMemcpyDeviceToHost);
  bool good = err == 0;
  for (uint32_t x : h) good = good && x == want;
  return good;
}

}  // namespace probe_common
