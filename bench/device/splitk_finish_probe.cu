// What a norm phase costs against finishing the split-K sum inside the GEMM phase: the
// question behind "norms dissolved" (docs/performance.md, run 17's estimates), measured
// before building it into the persistent kernel. In the kernel, O and down write split-K
// partial products and a norm phase (one token a task) sums them, adds the residual,
// reduces each token's sum of squares and writes the next GEMM's FP8 input; a third phase
// (QKV or gate/up) reads it. The alternative: the last of a 64-feature tile's K-split tasks
// (a ticket counter per tile, the CUDA "threadfence reduction" pattern) sums its tile,
// writes x, the unnormalised FP8 input and the tile's partial sums of squares, and the
// consumer applies each token's 1 / rms in its epilogue (the norm is linear in the
// activation but for that per-token factor), so the norm phase and one boundary go.
//
// A synthetic chain with the kernel's shapes (W = 1024 features in 16 tiles, H = 50 tokens,
// S K-splits; one block per SM, 256 threads, all resident), each iteration:
//   split:   16 S tasks (blocks 0 .. 16 S - 1) wait for the previous iteration's consumers,
//            each writes its tile's K-split partial (64 features x H tokens, fp32)
//   norm:    (protocol "norm") H tasks, one token each: all S partial rows and x loaded
//            before any use, v = x + sum, x stored, a block reduction of the token's sum of
//            squares, the token's 1024 one-byte outputs stored
//   finish:  (protocol "finish") every split task takes a ticket (atom.acq_rel) after its
//            partial; the tile's last one loads the S partials and x of its tile, stores x,
//            the 16-byte rows of one-byte outputs and the tile's per-token sums of squares,
//            then signals
//   consume: every block waits, loads the whole output (H x 1024 bytes, as a GEMM task
//            reads its activation) and (finish) the 16 partial sums of squares a token,
//            and hashes what the norm would have produced
//   finish_x: (protocol "finish_x") the finisher stores v (bf16) instead of the one-byte
//            outputs and the consumers read that: consumers that normalise their own input
//            from the residual (the probe's finisher also keeps its bounded x: one store more)
// Exact integer arithmetic stands in for the math (the costs measured are the loads,
// stores and synchronisation), so every protocol's consumers must hash the same values;
// the host replays the chain and checks every block's hash.
// Per-iteration time = (time of N2 iterations - time of N1) / (N2 - N1): launch excluded.
//   nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/splitk_finish_probe bench/device/splitk_finish_probe.cu
//   /tmp/splitk_finish_probe        (one JSON object on stdout)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <vector>

#include "../../csrc/megakernel/gpu_scope_sync.cuh"
#include "probe_common.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kW = 1024, kH = 50, kTileF = 64, kTiles = kW / kTileF;
constexpr int kGroupF = 16;                    // features a finishing thread owns
constexpr int kGroups = kTileF / kGroupF;      // threads a token in the finisher
constexpr int kFeatPerThread = kW / kThreads;  // in a norm task
constexpr int kWordsPerRow = kW / 4;           // 32-bit words of one token's outputs
constexpr uint32_t kSeed = 0x1234u;
static_assert(kH * kGroups <= kThreads, "a finishing thread per (token, 16 features)");
static_assert(kWordsPerRow == kThreads, "a consumer thread reads one word of every row");

using probe_common::mix;

// norm: a norm phase; finish: the tile's last split finishes it, the consumer reads the
// one-byte outputs; finish_x: the same finisher stores v (bf16) instead of the bytes and the
// consumer reads those (twice the bytes: a consumer normalising from x itself, which keeps
// the static scales of today's norm outputs)
enum Protocol { kNorm = 0, kFinish = 1, kFinishX = 2 };
// Split ks's partial of (token t, feature f) in the iteration after consumer hash h: 0..15.
__host__ __device__ inline uint32_t part_value(uint32_t h, int ks, int t, int f) {
  return mix(h ^ static_cast<uint32_t>((ks * kH + t) * kW + f)) & 15u;
}
__host__ __device__ inline uint32_t word_hash(uint32_t word, int index) {
  return mix(word ^ (static_cast<uint32_t>(index) * 0x9e3779b9U));
}

using flash_rt::mk::red_release_add;
__device__ inline unsigned atom_add_acq_rel(unsigned* p, unsigned v) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;\n" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

struct Args {
  int iters;
  float* part;         // [S][H][W]
  __nv_bfloat16* x;    // [H][W], zero at launch
  uint8_t* out;        // [H][W]
  __nv_bfloat16* xv;   // [H][W] (finish_x): v as the finisher computed it
  uint32_t* ss_part;   // [tiles][H] (finish)
  unsigned* ticket;    // [tiles], zero at launch (each finisher resets its own)
  unsigned* counters;  // [3][iters]: split, norm, consume; zero at launch
  uint32_t* hash_out;  // [blocks]
  int* error;
};

// Thread 0 waits until *ctr >= target (acquire), then the block's barrier.
__device__ inline void wait_counter(const unsigned* ctr, unsigned target, int* error) {
  if (threadIdx.x == 0) probe_common::spin_acquire(ctr, target, error);
  __syncthreads();
}
__device__ inline void signal(unsigned* ctr) {
  __syncthreads();
  if (threadIdx.x == 0) red_release_add(ctr, 1u);
}
__device__ inline uint32_t block_sum(uint32_t v, uint32_t* red) {
  return probe_common::block_reduce<probe_common::SumOp, kThreads>(v, red);
}
__device__ inline uint32_t block_xor(uint32_t v, uint32_t* red) {
  return probe_common::block_reduce<probe_common::XorOp, kThreads>(v, red);
}
__device__ inline uint32_t bf16_int(__nv_bfloat16 v) { return static_cast<uint32_t>(__bfloat162float(v)); }

// The finisher: the tile's last split task. Thread (t, g) owns features f0 .. f0 + 15 of
// token t: every load first (S partial rows of 16 floats, 16 bf16 of x), then x, the
// outputs (one 16-byte store) and, from the token's 4 threads, its partial sum of squares.
template <int S, bool StoreV>
__device__ inline void finish_tile(const Args& a, int tile) {
  // (threads past the last token take token H - 1's loads and store nothing: every lane
  // of a warp must reach the shuffles below)
  const int tid = threadIdx.x;
  const bool active = tid < kH * kGroups;
  const int t = active ? tid / kGroups : kH - 1, g = tid % kGroups, f0 = tile * kTileF + g * kGroupF;
  float4 p[S][kGroupF / 4];
#pragma unroll
  for (int ks = 0; ks < S; ++ks)
#pragma unroll
    for (int j = 0; j < kGroupF / 4; ++j)
      p[ks][j] = __ldcg(reinterpret_cast<const float4*>(a.part + (static_cast<size_t>(ks) * kH + t) * kW + f0) + j);
  uint4 xr[2];
  const uint4* xs = reinterpret_cast<const uint4*>(a.x + static_cast<size_t>(t) * kW + f0);
  xr[0] = __ldcg(xs);
  xr[1] = __ldcg(xs + 1);
  const __nv_bfloat16* xv = reinterpret_cast<const __nv_bfloat16*>(xr);
  uint32_t v[kGroupF], ss = 0;
#pragma unroll
  for (int i = 0; i < kGroupF; ++i) {
    float sum = 0.f;
#pragma unroll
    for (int ks = 0; ks < S; ++ks) sum += reinterpret_cast<const float*>(&p[ks][0])[i];
    v[i] = bf16_int(xv[i]) + static_cast<uint32_t>(sum);
    ss += v[i] * v[i];
  }
  alignas(16) __nv_bfloat16 xn[kGroupF];
  alignas(16) __nv_bfloat16 vb[kGroupF];
  alignas(16) uint8_t o[kGroupF];
#pragma unroll
  for (int i = 0; i < kGroupF; ++i) {
    xn[i] = __float2bfloat16_rn(static_cast<float>(v[i] & 0x7fu));
    vb[i] = __float2bfloat16_rn(static_cast<float>(v[i]));  // exact: v < 256
    o[i] = static_cast<uint8_t>(v[i] & 0xffu);
  }
  ss += __shfl_xor_sync(0xffffffffu, ss, 1);  // the token's 4 threads are lanes 4k .. 4k + 3
  ss += __shfl_xor_sync(0xffffffffu, ss, 2);
  if (!active) return;
  const size_t row = static_cast<size_t>(t) * kW + f0;
  uint4* xd = reinterpret_cast<uint4*>(a.x + row);
  __stcg(xd, reinterpret_cast<const uint4*>(xn)[0]);
  __stcg(xd + 1, reinterpret_cast<const uint4*>(xn)[1]);
  if (StoreV) {
    __stcg(reinterpret_cast<uint4*>(a.xv + row), reinterpret_cast<const uint4*>(vb)[0]);
    __stcg(reinterpret_cast<uint4*>(a.xv + row) + 1, reinterpret_cast<const uint4*>(vb)[1]);
  } else {
    __stcg(reinterpret_cast<uint4*>(a.out + row), *reinterpret_cast<const uint4*>(o));
  }
  if (g == 0) __stcg(a.ss_part + tile * kH + t, ss);
}

// One token of the norm phase: thread tid owns features tid + 256 i.
template <int S>
__device__ inline void norm_token(const Args& a, int t, uint32_t* red) {
  const int tid = threadIdx.x;
  float p[S][kFeatPerThread];
  __nv_bfloat16 xv[kFeatPerThread];
#pragma unroll
  for (int ks = 0; ks < S; ++ks)
#pragma unroll
    for (int i = 0; i < kFeatPerThread; ++i)
      p[ks][i] = __ldcg(a.part + (static_cast<size_t>(ks) * kH + t) * kW + tid + kThreads * i);
#pragma unroll
  for (int i = 0; i < kFeatPerThread; ++i) xv[i] = __ldcg(a.x + static_cast<size_t>(t) * kW + tid + kThreads * i);
  uint32_t v[kFeatPerThread], ss = 0;
#pragma unroll
  for (int i = 0; i < kFeatPerThread; ++i) {
    float sum = 0.f;
#pragma unroll
    for (int ks = 0; ks < S; ++ks) sum += p[ks][i];
    v[i] = bf16_int(xv[i]) + static_cast<uint32_t>(sum);
    ss += v[i] * v[i];
  }
  ss = block_sum(ss, red);
#pragma unroll
  for (int i = 0; i < kFeatPerThread; ++i) {
    const size_t at = static_cast<size_t>(t) * kW + tid + kThreads * i;
    a.x[at] = __float2bfloat16_rn(static_cast<float>(v[i] & 0x7fu));
    a.out[at] = static_cast<uint8_t>((v[i] + ss) & 0xffu);
  }
}

template <int Proto, int S>
__global__ void __launch_bounds__(kThreads, 1) probe(Args a) {
  __shared__ uint32_t red[kThreads / 32];
  __shared__ uint32_t ss_s[kH];
  __shared__ int last_s;
  constexpr bool Finish = Proto != kNorm;
  const int tid = threadIdx.x, b = blockIdx.x, blocks = gridDim.x;
  unsigned* c_split = a.counters;
  unsigned* c_norm = a.counters + a.iters;
  unsigned* c_cons = a.counters + 2 * a.iters;
  uint32_t h = kSeed, hash = 0;
  for (int it = 0; it < a.iters; ++it) {
    // ---- split-K partials
    if (b < kTiles * S) {
      const int tile = b / S, ks = b % S;
      if (it > 0) wait_counter(c_cons + it - 1, blocks, a.error);
      for (int i = tid; i < kH * kTileF; i += kThreads) {
        const int t = i / kTileF, f = tile * kTileF + i % kTileF;
        __stcg(a.part + (static_cast<size_t>(ks) * kH + t) * kW + f,
               static_cast<float>(part_value(h, ks, t, f)));
      }
      if (Finish) {
        __syncthreads();
        if (tid == 0) last_s = atom_add_acq_rel(a.ticket + tile, 1u) == S - 1;
        __syncthreads();
        if (last_s) {
          finish_tile<S, Proto == kFinishX>(a, tile);
          __syncthreads();
          if (tid == 0) a.ticket[tile] = 0;  // the next iteration's splits wait for this one's consumers
        }
      }
      signal(c_split + it);
    }
    // ---- the norm phase
    if (!Finish) {
      const int t = (b - kTiles * S + blocks) % blocks;
      if (t < kH) {
        wait_counter(c_split + it, kTiles * S, a.error);
        norm_token<S>(a, t, red);
        signal(c_norm + it);
      }
    }
    // ---- the consumer: every block reads all outputs
    wait_counter(Finish ? c_split + it : c_norm + it, Finish ? kTiles * S : kH, a.error);
    uint32_t w[kH];
    if (Proto == kFinishX) {  // 4 features = 8 bytes of v a row: the bytes they would be
      uint2 vv[kH];
#pragma unroll
      for (int t = 0; t < kH; ++t) vv[t] = __ldcg(reinterpret_cast<const uint2*>(a.xv) + t * kWordsPerRow + tid);
#pragma unroll
      for (int t = 0; t < kH; ++t) {
        const __nv_bfloat16* q = reinterpret_cast<const __nv_bfloat16*>(&vv[t]);
        w[t] = (bf16_int(q[0]) & 0xffu) | (bf16_int(q[1]) & 0xffu) << 8 | (bf16_int(q[2]) & 0xffu) << 16 |
               (bf16_int(q[3]) & 0xffu) << 24;
      }
    } else {
#pragma unroll
      for (int t = 0; t < kH; ++t) w[t] = __ldcg(reinterpret_cast<const uint32_t*>(a.out) + t * kWordsPerRow + tid);
    }
    if (Finish) {
      if (tid < kH) {
        uint32_t s = 0;
        for (int tile = 0; tile < kTiles; ++tile) s += __ldcg(a.ss_part + tile * kH + tid);
        ss_s[tid] = s;
      }
      __syncthreads();
    }
    uint32_t acc = 0;
#pragma unroll
    for (int t = 0; t < kH; ++t) {
      const uint32_t word = Finish ? __vadd4(w[t], (ss_s[t] & 0xffu) * 0x01010101u) : w[t];
      acc ^= word_hash(word, t * kWordsPerRow + tid);
    }
    h = block_xor(acc, red);
    hash = hash * 31u + h;
    signal(c_cons + it);
  }
  if (tid == 0) a.hash_out[b] = hash;
}

// The chain on the host: every block's expected hash (all equal).
uint32_t expected_hash(int iters, int S) {
  std::vector<uint32_t> x(kH * kW, 0), out(kH * kW);
  uint32_t h = kSeed, hash = 0;
  for (int it = 0; it < iters; ++it) {
    for (int t = 0; t < kH; ++t) {
      uint32_t ss = 0;
      std::vector<uint32_t> v(kW);
      for (int f = 0; f < kW; ++f) {
        uint32_t sum = 0;
        for (int ks = 0; ks < S; ++ks) sum += part_value(h, ks, t, f);
        v[f] = x[t * kW + f] + sum;
        ss += v[f] * v[f];
      }
      for (int f = 0; f < kW; ++f) {
        x[t * kW + f] = v[f] & 0x7fu;
        out[t * kW + f] = (v[f] + ss) & 0xffu;
      }
    }
    uint32_t acc = 0;
    for (int t = 0; t < kH; ++t)
      for (int k = 0; k < kWordsPerRow; ++k) {
        const uint32_t* o = &out[t * kW + 4 * k];
        const uint32_t word = o[0] | o[1] << 8 | o[2] << 16 | o[3] << 24;
        acc ^= word_hash(word, t * kWordsPerRow + k);
      }
    h = acc;
    hash = hash * 31u + h;
  }
  return hash;
}

using probe_common::ok;
using Kernel = void (*)(Args);

// p50 of `reps` launches of `iters` iterations, in us; false on an error.
bool time_launch(Kernel k, int S, Args a, int blocks, int smem, int reps, double& p50, bool& correct) {
  static std::map<std::pair<int, int>, uint32_t> want_of;
  const auto key = std::make_pair(a.iters, S);
  if (!want_of.count(key)) want_of[key] = expected_hash(a.iters, S);
  const uint32_t want = want_of[key];
  auto reset = [&] {
    cudaMemset(a.counters, 0, sizeof(unsigned) * 3 * a.iters);
    cudaMemset(a.ticket, 0, sizeof(unsigned) * kTiles);
    cudaMemset(a.x, 0, sizeof(__nv_bfloat16) * kH * kW);
    cudaMemset(a.hash_out, 0, sizeof(uint32_t) * blocks);
  };
  auto launch = [&] { k<<<blocks, kThreads, smem>>>(a); };
  auto check = [&] { return probe_common::hashes_match(a.hash_out, blocks, a.error, want); };
  return probe_common::time_launches(reps, reset, launch, check, p50, correct);
}

}  // namespace

int main() {
  probe_common::ResidentGrid g;
  if (!probe_common::resident_grid(g, 2048)) return 1;
  const cudaDeviceProp& prop = g.prop;
  const int sms = g.blocks, smem = g.smem;
  struct Case {
    const char* protocol;
    int S;
    Kernel k;
  };
  // S = 4: O and down at 2 views h50 (splitk_scale 2); 8: at horizons <= 48 (scale 1)
  const Case cases[] = {{"norm", 4, probe<kNorm, 4>}, {"finish", 4, probe<kFinish, 4>},
                        {"finish_x", 4, probe<kFinishX, 4>}, {"norm", 8, probe<kNorm, 8>},
                        {"finish", 8, probe<kFinish, 8>}, {"finish_x", 8, probe<kFinishX, 8>}};
  for (const Case& c : cases) cudaFuncSetAttribute(c.k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  const int blocks = sms;
  if (blocks < kTiles * 8 || blocks < kH) {
    std::printf("{\"error\": \"needs >= %d SMs\"}\n", kTiles * 8);
    return 1;
  }
  const int short_iters = 8, long_iters = 72, reps = 21;
  Args a{};
  int* err = nullptr;
  if (!ok(cudaMalloc(&a.part, sizeof(float) * 8 * kH * kW), "malloc") ||
      !ok(cudaMalloc(&a.x, sizeof(__nv_bfloat16) * kH * kW), "malloc") ||
      !ok(cudaMalloc(&a.out, kH * kW), "malloc") ||
      !ok(cudaMalloc(&a.xv, sizeof(__nv_bfloat16) * kH * kW), "malloc") ||
      !ok(cudaMalloc(&a.ss_part, sizeof(uint32_t) * kTiles * kH), "malloc") ||
      !ok(cudaMalloc(&a.ticket, sizeof(unsigned) * kTiles), "malloc") ||
      !ok(cudaMalloc(&a.counters, sizeof(unsigned) * 3 * long_iters), "malloc") ||
      !ok(cudaMalloc(&a.hash_out, sizeof(uint32_t) * blocks), "malloc") ||
      !ok(cudaMalloc(&err, sizeof(int)), "malloc"))
    return 1;
  cudaMemset(err, 0, sizeof(int));
  a.error = err;
  std::printf("{\"device\": \"%s\", \"sms\": %d, \"threads\": %d, \"reps\": %d, \"iterations\": [%d, %d], "
              "\"width\": %d, \"tokens\": %d, \"runs\": [",
              prop.name, sms, kThreads, reps, short_iters, long_iters, kW, kH);
  std::fflush(stdout);
  bool first = true;
  for (const Case& c : cases) {
    double t_short = 0, t_long = 0;
    bool c1 = false, c2 = false;
    a.iters = short_iters;
    if (!time_launch(c.k, c.S, a, blocks, smem, reps, t_short, c1)) return 1;
    a.iters = long_iters;
    if (!time_launch(c.k, c.S, a, blocks, smem, reps, t_long, c2)) return 1;
    std::printf("%s{\"protocol\": \"%s\", \"splits\": %d, \"us_per_iteration\": %.4f, "
                "\"launch_us\": [%.2f, %.2f], \"correct\": %s}",
                first ? "" : ", ", c.protocol, c.S, (t_long - t_short) / (long_iters - short_iters),
                t_short, t_long, c1 && c2 ? "true" : "false");
    std::fflush(stdout);  // (a later case that hangs leaves the earlier ones)
    first = false;
  }
  std::printf("]}\n");
  return 0;
}
