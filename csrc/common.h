// Shared host/device helpers for flash_rt_kernels: argument checks that raise clear
// Python errors, CUDA error propagation, and small vector / FP8 conversion utilities.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef __CUDACC__
#include "pdl.cuh"  // grid_dependency_wait, allow_dependents (device side of the PDL below)
#endif

namespace flash_rt {

// Finite mask constant of the reference implementation (not -inf: see docs/kernels.md).
constexpr float kMaskValue = -2.3819763e38f;
// Largest finite float8_e4m3fn value; quantizers saturate to +-kE4M3Max.
constexpr float kE4M3Max = 448.0f;

using bf16 = __nv_bfloat16;
using fp8 = __nv_fp8_e4m3;

// ---------------------------------------------------------------- host-side checks
// Every public launcher validates its arguments before touching the GPU; a violation
// throws std::invalid_argument, which pybind11 turns into a Python ValueError.

[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument(where + ": " + what);
}

inline void check(bool ok, const char* where, const std::string& what) {
  if (!ok) fail(where, what);
}

inline void check_ptr(uintptr_t p, const char* where, const char* name, unsigned align,
                      bool nullable = false) {
  if (p == 0) {
    if (!nullable) fail(where, std::string(name) + " is a null pointer");
    return;
  }
  if (p % align != 0) {
    // snprintf, not iostreams: no locale machinery in the module (see CMakeLists.txt)
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s = 0x%llx is not %u-byte aligned (misaligned view or "
                  "offset into a tensor?)", name, static_cast<unsigned long long>(p), align);
    fail(where, buf);
  }
}

inline void check_positive(long long v, const char* where, const char* name) {
  if (v <= 0) fail(where, std::string(name) + " must be > 0, got " + std::to_string(v));
}

inline void check_multiple(long long v, long long m, const char* where, const char* name) {
  if (v % m != 0) {
    fail(where, std::string(name) + " = " + std::to_string(v) + " must be a multiple of " +
                    std::to_string(m));
  }
}

// Raises std::runtime_error (Python RuntimeError) after a launch that failed.
inline void check_launch(const char* where) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(where) + ": CUDA launch failed: " +
                             cudaGetErrorString(e));
  }
}

inline void check_cuda(cudaError_t e, const char* where) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(where) + ": " + cudaGetErrorString(e));
  }
}

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

#ifndef FLASH_RT_GPU_ARCHS
#define FLASH_RT_GPU_ARCHS "unknown"  // (CMake defines it: the module's arch list)
#endif

// Launchers of sm_90a-only kernels (wgmma, CUTLASS SM90): the current device must be a
// Hopper GPU and the module built for 90a, else a clear error naming `what` the kernel
// needs and `instead` what to use. Returns the device id.
inline int require_sm90a(const char* where, const char* what, const char* instead) {
  int dev = 0, major = 0, minor = 0;
  check_cuda(cudaGetDevice(&dev), where);
  check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), where);
  check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), where);
  if (major != 9 || std::string(FLASH_RT_GPU_ARCHS).find("90a") == std::string::npos) {
    fail(where, std::string("needs a Hopper GPU (sm_90) and a module built for 90a (") + what +
                    "); this GPU is sm_" + std::to_string(major) + std::to_string(minor) +
                    ", the module has " + FLASH_RT_GPU_ARCHS + " (" + instead + ")");
  }
  return dev;
}

template <typename T>
inline T* as_ptr(uintptr_t p) { return reinterpret_cast<T*>(p); }

// ---------------------------------------------------------------- programmatic dependent launch
// With the launch attribute cudaLaunchAttributeProgrammaticStreamSerialization a kernel may
// start launching while the kernel before it in its stream still runs (once every block of
// that one has let it: pdl_begin() / allow_dependents(), or exited), so its launch and its
// blocks' start-up overlap the previous kernel's tail; in a captured graph the edge becomes
// a programmatic one. Every kernel of the module waits for its predecessors in pdl_begin()
// (the persistent one: grid_dependency_wait after its load-time prefetches)
// before touching memory, so the attribute is always safe to set. The module's kernels are
// launched with it when the process asks (set_programmatic_launch, which the engine calls
// with the hardware pipeline's `programmatic_launch` or FLASH_RT_PDL); the persistent expert
// kernel has its own switch (its `pdl` size, FLASH_RT_MK_PDL).
inline bool& programmatic_launch() {
  static bool on = false;
  return on;
}

// kernel<<<grid, block, smem, s>>>(args...), with the PDL attribute when `pdl`. As with
// <<<>>>, a failed launch is left for the launcher's check_launch (cudaGetLastError).
template <typename... Params, typename... Args>
inline void launch_kernel(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block,
                          size_t smem, cudaStream_t s, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = &attr;
  cfg.numAttrs = pdl ? 1 : 0;
  cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// The module's kernels (not the persistent one): PDL as the process asked.
template <typename... Params, typename... Args>
inline void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                          cudaStream_t s, Args&&... args) {
  launch_kernel(programmatic_launch(), kernel, grid, block, smem, s, std::forward<Args>(args)...);
}

inline unsigned ceil_div(long long a, long long b) { return static_cast<unsigned>((a + b - 1) / b); }

// ---------------------------------------------------------------- device helpers
#ifdef __CUDACC__

// Wait for the kernels before this one (a PDL launch may have started early), then let the
// next one start launching: the first statement of every kernel of the module but the
// persistent one, which triggers its next step itself. (Leaving the trigger to the blocks'
// exit instead was measured in run 17 and was no better: docs/performance.md.)
__device__ __forceinline__ void pdl_begin() {
  grid_dependency_wait();
  allow_dependents();
}

// An already scaled value to e4m3: saturate to +-kE4M3Max, round to nearest even.
__device__ __forceinline__ fp8 sat_fp8(float v) {
  return fp8(fminf(fmaxf(v, -kE4M3Max), kE4M3Max));
}

// Quantize with a dequantisation scale s (real = fp8 * s): q = sat(x / s), round to
// nearest even. Division (not multiply by 1/s) so results match torch's x / s bit-exactly.
__device__ __forceinline__ fp8 to_fp8(float x, float s) { return sat_fp8(__fdiv_rn(x, s)); }

struct alignas(16) Vec8bf16 { bf16 v[8]; };
struct alignas(8) Vec8fp8 { fp8 v[8]; };

__device__ __forceinline__ void load8(const bf16* p, float (&out)[8]) {
  Vec8bf16 t = *reinterpret_cast<const Vec8bf16*>(p);
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] = __bfloat162float(t.v[i]);
}

__device__ __forceinline__ void store8(bf16* p, const float (&in)[8]) {
  Vec8bf16 t;
#pragma unroll
  for (int i = 0; i < 8; ++i) t.v[i] = __float2bfloat16_rn(in[i]);
  *reinterpret_cast<Vec8bf16*>(p) = t;
}

__device__ __forceinline__ void store8(fp8* p, const float (&in)[8], float s) {
  Vec8fp8 t;
#pragma unroll
  for (int i = 0; i < 8; ++i) t.v[i] = to_fp8(in[i], s);
  *reinterpret_cast<Vec8fp8*>(p) = t;
}

// Output-type dispatch for kernels that can write either bf16 or FP8 (with scale).
__device__ __forceinline__ void store8_out(bf16* p, const float (&in)[8], float) { store8(p, in); }
__device__ __forceinline__ void store8_out(fp8* p, const float (&in)[8], float s) { store8(p, in, s); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum; `scratch` holds >= 32 floats. All threads get the result.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(t);
}

// GELU, tanh form. tanh(y) = 1 - 2 / (exp(2y) + 1) with the fast exp and division (absolute
// error ~1e-7 over the whole range, saturating correctly): a tenth of tanhf's instructions,
// which made the prefix GeGLU compute-bound.
__device__ __forceinline__ float gelu_tanh(float x) {
  const float k0 = 0.7978845608028654f;  // sqrt(2/pi)
  const float k1 = 0.044715f;
  const float y = k0 * (x + k1 * x * x * x);
  const float t = 1.f - __fdividef(2.f, __expf(2.f * y) + 1.f);
  return 0.5f * x * (1.f + t);
}

// RoPE: (cos, sin) of pair i at position pos, exactly as the reference computes them in fp32:
// timescale = theta ** ((2 / D) * i), radians = pos / timescale.
__device__ __forceinline__ float2 rope_angle(float pos, int i, int D, float theta) {
  const float expo = __fmul_rn(__fdiv_rn(2.f, static_cast<float>(D)), static_cast<float>(i));
  const float ts = powf(theta, expo);
  const float rad = __fdiv_rn(pos, ts);
  float sn, cs;
  sincosf(rad, &sn, &cs);
  return make_float2(cs, sn);
}

#endif  // __CUDACC__

}  // namespace flash_rt
