// Memory-bound elementwise kernels: gated residual add, GeGLU -> FP8/bf16, SiLU (Pi0's
// action-time MLP), FP8 quantize (static scale, dynamic scale from amax), running amax for
// calibration, and the flow-matching Euler update. 16-byte vector accesses; sizes must be
// multiples of 8.
#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(i64 n_vec) {
  i64 blocks = (n_vec + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<i64>(blocks, 65535ll * 8));
}

// x[m, :] += gate[cond(m), :] * y[m, :]; gate = mod[cond, 2N:3N] (fp32), bf16 result.
__global__ void gated_residual_kernel(bf16* __restrict__ x, const bf16* __restrict__ y,
                                      const float* __restrict__ mod, int N, i64 n_vec,
                                      int rows_per_cond) {
  pdl_begin();
  const int nv_row = N / 8;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n_vec;
       i += (i64)gridDim.x * blockDim.x) {
    const i64 row = i / nv_row;
    const int col = static_cast<int>(i % nv_row) * 8;
    const float* g = mod + (row / rows_per_cond) * 3ll * N + 2 * N + col;
    float xv[8], yv[8];
    load8(x + i * 8, xv);
    load8(y + i * 8, yv);
#pragma unroll
    for (int k = 0; k < 8; ++k) xv[k] = __fadd_rn(xv[k], __fmul_rn(g[k], yv[k]));
    store8(x + i * 8, xv);
  }
}

// GeGLU's FP8 store multiplies by 1 / s instead of dividing (to_fp8): with tanhf, the IEEE
// division made the prefix's 712 x 16384 GeGLU compute-bound (26.6 us for 58 MB on the H100).
// x * (1/s) and x / s differ by at most an fp32 ulp, which changes the e4m3 result only when
// x / s lies that close to a rounding boundary.
__device__ __forceinline__ void store8_inv(fp8* p, const float (&in)[8], float inv_s) {
  Vec8fp8 t;
#pragma unroll
  for (int i = 0; i < 8; ++i) t.v[i] = sat_fp8(in[i] * inv_s);
  *reinterpret_cast<Vec8fp8*>(p) = t;
}
__device__ __forceinline__ void store8_inv(bf16* p, const float (&in)[8], float) { store8(p, in); }

// out[m, f] = gelu_tanh(gate) * up, gu's rows in the weight spec's gate/up interleave
// (GATE_UP_GROUP = 8, models/common/paligemma_pipeline/dims.py): gate column f at
// 16 (f / 8) + f % 8, its up partner 8 columns on. One 8-column group per thread.
static_assert(kGegluInterleave == 8, "geglu_kernel reads one gate group as one 8-value vector");
template <typename Out>
__global__ void geglu_kernel(const bf16* __restrict__ gu, Out* __restrict__ out,
                             const float* __restrict__ out_scale, int F, i64 n_vec) {
  pdl_begin();
  const float inv_s = out_scale ? 1.f / *out_scale : 1.f;
  const int nv_row = F / 8;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n_vec;
       i += (i64)gridDim.x * blockDim.x) {
    const i64 row = i / nv_row;
    const int col = static_cast<int>(i % nv_row) * 8;
    float g[8], u[8], o[8];
    load8(gu + row * 2 * F + 2 * col, g);
    load8(gu + row * 2 * F + 2 * col + 8, u);
#pragma unroll
    for (int k = 0; k < 8; ++k) o[k] = gelu_tanh(g[k]) * u[k];
    store8_inv(out + i * 8, o, inv_s);
  }
}

// out = x * sigmoid(x) = x / (1 + exp(-x)) in fp32, rounded to bf16; out may alias x.
__global__ void silu_kernel(const bf16* x, bf16* out, i64 n_vec) {
  pdl_begin();
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n_vec;
       i += (i64)gridDim.x * blockDim.x) {
    float v[8];
    load8(x + i * 8, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __fdiv_rn(v[k], 1.f + expf(-v[k]));
    store8(out + i * 8, v);
  }
}

__global__ void quantize_kernel(const bf16* __restrict__ x, fp8* __restrict__ out,
                                const float* __restrict__ scale, const float* __restrict__ amax,
                                float* __restrict__ scale_out, i64 n_vec) {
  pdl_begin();
  // Static: s = *scale. Dynamic: s = max(amax, tiny) / 448 (block 0 publishes it).
  const float s = scale ? *scale : fmaxf(*amax, 1e-12f) / kE4M3Max;
  if (scale_out && blockIdx.x == 0 && threadIdx.x == 0) *scale_out = s;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n_vec;
       i += (i64)gridDim.x * blockDim.x) {
    float v[8];
    load8(x + i * 8, v);
    store8(out + i * 8, v, s);
  }
}

// amax = max(amax, max |x|). Non-negative floats order like their int bit patterns.
__global__ void amax_kernel(const bf16* __restrict__ x, float* __restrict__ amax, i64 n_vec) {
  pdl_begin();
  float m = 0.f;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n_vec;
       i += (i64)gridDim.x * blockDim.x) {
    float v[8];
    load8(x + i * 8, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) m = fmaxf(m, fabsf(v[k]));  // fmaxf drops NaN
  }
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) atomicMax(reinterpret_cast<int*>(amax), __float_as_int(m));
}

// x (fp32) += dt * v (bf16); optional bf16 copy of the new x for the next GEMM.
__global__ void euler_kernel(float* __restrict__ x, const bf16* __restrict__ v,
                             bf16* __restrict__ x_bf16, float dt, i64 n_vec) {
  pdl_begin();
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n_vec;
       i += (i64)gridDim.x * blockDim.x) {
    float vv[8];
    load8(v + i * 8, vv);
    float4* xp = reinterpret_cast<float4*>(x + i * 8);
    float4 a = xp[0], b = xp[1];
    float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) xv[k] = __fadd_rn(xv[k], __fmul_rn(dt, vv[k]));  // as x + dt * v
    xp[0] = make_float4(xv[0], xv[1], xv[2], xv[3]);
    xp[1] = make_float4(xv[4], xv[5], xv[6], xv[7]);
    if (x_bf16) store8(x_bf16 + i * 8, xv);
  }
}

void check_n(const char* where, i64 n) {
  check_positive(n, where, "n");
  check_multiple(n, 8, where, "n");
}

}  // namespace

void gated_residual(ptr_t x, ptr_t y, ptr_t mod, i64 M, i64 N, i64 rows_per_cond,
                    ptr_t stream) {
  const char* w = "gated_residual";
  check_positive(M, w, "M");
  check_positive(N, w, "N");
  check_multiple(N, 8, w, "N");
  check(rows_per_cond >= 1, w, "rows_per_cond must be >= 1");
  check_ptr(x, w, "x", 16);
  check_ptr(y, w, "y", 16);
  check_ptr(mod, w, "mod", 4);
  const i64 nv = M * N / 8;
  launch_kernel(gated_residual_kernel, dim3(grid_for(nv)), dim3(kThreads), 0, as_stream(stream),
      as_ptr<bf16>(x), as_ptr<const bf16>(y), as_ptr<const float>(mod), static_cast<int>(N), nv,
      static_cast<int>(std::min<i64>(rows_per_cond, M)));
  check_launch(w);
}

namespace {
// Shared by both output types: fp8 output needs the device-side scale, bf16 takes none.
void geglu_impl(const char* w, bool fp8_out, ptr_t gu, ptr_t out, ptr_t out_scale, i64 M,
                i64 F, ptr_t stream) {
  check_positive(M, w, "M");
  check_positive(F, w, "F");
  check_multiple(F, 8, w, "F");
  check_ptr(gu, w, "gu", 16);
  check_ptr(out, w, "out", fp8_out ? 8 : 16);
  const i64 nv = M * F / 8;
  if (fp8_out) {
    check_ptr(out_scale, w, "out_scale", 4);
    launch_kernel(geglu_kernel<fp8>, dim3(grid_for(nv)), dim3(kThreads), 0, as_stream(stream),
        as_ptr<const bf16>(gu), as_ptr<fp8>(out), as_ptr<const float>(out_scale),
        static_cast<int>(F), nv);
  } else {
    launch_kernel(geglu_kernel<bf16>, dim3(grid_for(nv)), dim3(kThreads), 0, as_stream(stream),
        as_ptr<const bf16>(gu), as_ptr<bf16>(out), nullptr, static_cast<int>(F), nv);
  }
  check_launch(w);
}
}  // namespace

void geglu_fp8(ptr_t gu, ptr_t out, ptr_t out_scale, i64 M, i64 F, ptr_t stream) {
  geglu_impl("geglu_fp8", true, gu, out, out_scale, M, F, stream);
}

void geglu_bf16(ptr_t gu, ptr_t out, i64 M, i64 F, ptr_t stream) {
  geglu_impl("geglu_bf16", false, gu, out, 0, M, F, stream);
}

void silu_bf16(ptr_t x, ptr_t out, i64 n, ptr_t stream) {
  const char* w = "silu_bf16";
  check_n(w, n);
  check_ptr(x, w, "x", 16);
  check_ptr(out, w, "out", 16);
  launch_kernel(silu_kernel, dim3(grid_for(n / 8)), dim3(kThreads), 0, as_stream(stream),
      as_ptr<const bf16>(x), as_ptr<bf16>(out), n / 8);
  check_launch(w);
}

void quantize_fp8_static(ptr_t x, ptr_t out, ptr_t scale, i64 n, ptr_t stream) {
  const char* w = "quantize_fp8_static";
  check_n(w, n);
  check_ptr(x, w, "x", 16);
  check_ptr(out, w, "out", 8);
  check_ptr(scale, w, "scale", 4);
  launch_kernel(quantize_kernel, dim3(grid_for(n / 8)), dim3(kThreads), 0, as_stream(stream),
      as_ptr<const bf16>(x), as_ptr<fp8>(out), as_ptr<const float>(scale), nullptr, nullptr,
      n / 8);
  check_launch(w);
}

void quantize_fp8_dynamic(ptr_t x, ptr_t out, ptr_t scale_out, ptr_t amax_ws, i64 n,
                          ptr_t stream) {
  const char* w = "quantize_fp8_dynamic";
  check_n(w, n);
  check_ptr(x, w, "x", 16);
  check_ptr(out, w, "out", 8);
  check_ptr(scale_out, w, "scale_out", 4);
  check_ptr(amax_ws, w, "amax_ws", 4);
  check(scale_out != amax_ws, w, "scale_out and amax_ws must be different floats");
  cudaStream_t s = as_stream(stream);
  check_cuda(cudaMemsetAsync(as_ptr<void>(amax_ws), 0, sizeof(float), s), w);
  launch_kernel(amax_kernel, dim3(grid_for(n / 8)), dim3(kThreads), 0, s,
                as_ptr<const bf16>(x), as_ptr<float>(amax_ws), n / 8);
  check_launch(w);
  launch_kernel(quantize_kernel, dim3(grid_for(n / 8)), dim3(kThreads), 0, s,
      as_ptr<const bf16>(x), as_ptr<fp8>(out), nullptr, as_ptr<const float>(amax_ws),
      as_ptr<float>(scale_out), n / 8);
  check_launch(w);
}

void amax_update(ptr_t x, i64 n, ptr_t amax, ptr_t stream) {
  const char* w = "amax_update";
  check_n(w, n);
  check_ptr(x, w, "x", 16);
  check_ptr(amax, w, "amax", 4);
  launch_kernel(amax_kernel, dim3(grid_for(n / 8)), dim3(kThreads), 0, as_stream(stream),
      as_ptr<const bf16>(x), as_ptr<float>(amax), n / 8);
  check_launch(w);
}

void euler_step(ptr_t x, ptr_t v, ptr_t x_bf16, i64 n, float dt, ptr_t stream) {
  const char* w = "euler_step";
  check_n(w, n);
  check_ptr(x, w, "x", 16);
  check_ptr(v, w, "v", 16);
  check_ptr(x_bf16, w, "x_bf16", 16, true);
  launch_kernel(euler_kernel, dim3(grid_for(n / 8)), dim3(kThreads), 0, as_stream(stream),
      as_ptr<float>(x), as_ptr<const bf16>(v), as_ptr<bf16>(x_bf16), dt, n / 8);
  check_launch(w);
}

}  // namespace flash_rt
