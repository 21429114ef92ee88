// Row norms fused with the quantisation of their output: LayerNorm, RMSNorm ((1+w), w,
// or no weight), Pi0.5 adaRMS (scale/shift from a precomputed per-step fp32 table), and
// the gated residual add fused in front of adaRMS. One block per row, 16-byte accesses,
// statistics in fp32, the row kept in registers (N <= kMaxN).
#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

constexpr int kThreads = 256;
constexpr int kChunks = 4;                       // most 8-element chunks per thread (CH)
constexpr int kMaxN = kThreads * kChunks * 8;    // 8192

enum class NormKind { kLayer, kRms, kAdaRms };

struct NormParams {
  const bf16* x;
  bf16* x_out;          // gated residual: x updated in place (nullptr otherwise)
  const bf16* y;        // gated residual branch (nullptr otherwise)
  const float* gate_mod;
  const bf16* w;        // LayerNorm / RMSNorm weight (nullable for RMS)
  const bf16* b;        // LayerNorm bias
  const float* mod;     // adaRMS table (conds, 3N): [scale | shift | gate]
  const float* out_scale;
  int N;
  int rows_per_cond;
  float eps;
  bool add_one;
};

// Per-column parameters of one 8-column chunk, loaded before the row statistics so their
// memory latency overlaps the row's (the kernels are latency-bound at these row counts):
// LayerNorm (w, b), RMSNorm (gain, -), adaRMS (1 + scale, shift).
template <NormKind kind>
__device__ __forceinline__ void load_params(const NormParams& p, int cond, int ch,
                                            float (&a)[8], float (&b)[8]) {
  if (kind == NormKind::kLayer) {
    load8(p.w + ch * 8, a);
    load8(p.b + ch * 8, b);
  } else if (kind == NormKind::kRms) {
    if (p.w) {
      load8(p.w + ch * 8, a);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) a[i] = 1.f;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = (p.w && p.add_one) ? 1.f + a[i] : a[i];
  } else {
    const float* m = p.mod + static_cast<size_t>(cond) * 3 * p.N + ch * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      a[i] = 1.f + m[i];
      b[i] = m[p.N + i];
    }
  }
}

// CH: 8-column chunks per thread (1, 2 or 4: N <= 2048, 4096, 8192), a template so rows of
// typical widths keep few registers and many blocks per SM.
template <NormKind kind, typename Out, int CH>
__global__ void __launch_bounds__(kThreads) norm_kernel(NormParams p, Out* __restrict__ out) {
  pdl_begin();
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  const int nchunks = p.N / 8;
  const size_t base = static_cast<size_t>(row) * p.N;
  const int cond = row / p.rows_per_cond;
  float v[CH][8], pa[CH][8], pb[CH][8];
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int ch = threadIdx.x + c * kThreads;
    if (ch < nchunks) {
      load_params<kind>(p, cond, ch, pa[c], pb[c]);
      load8(p.x + base + ch * 8, v[c]);
      if (p.y != nullptr) {  // x += gate * y, rounded to bf16 as stored
        float yv[8];
        load8(p.y + base + ch * 8, yv);
        const float* g = p.gate_mod + static_cast<size_t>(cond) * 3 * p.N + 2 * p.N + ch * 8;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          v[c][i] = __bfloat162float(__float2bfloat16_rn(__fadd_rn(v[c][i], __fmul_rn(g[i], yv[i]))));
        }
        store8(p.x_out + base + ch * 8, v[c]);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) sum += kind == NormKind::kLayer ? v[c][i] : v[c][i] * v[c][i];
    }
  }
  const float inv_n = 1.f / static_cast<float>(p.N);
  float mean = 0.f, rstd;
  if (kind == NormKind::kLayer) {
    mean = block_sum(sum, scratch) * inv_n;
    float sq = 0.f;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      if (threadIdx.x + c * kThreads < nchunks) {
#pragma unroll
        for (int i = 0; i < 8; ++i) { float d = v[c][i] - mean; sq += d * d; }
      }
    }
    rstd = rsqrtf(block_sum(sq, scratch) * inv_n + p.eps);
  } else {
    rstd = rsqrtf(block_sum(sum, scratch) * inv_n + p.eps);
  }
  const float s = p.out_scale ? *p.out_scale : 1.f;
#pragma unroll
  for (int c = 0; c < CH; ++c) {
    const int ch = threadIdx.x + c * kThreads;
    if (ch >= nchunks) continue;
    float o[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (kind == NormKind::kLayer) o[i] = (v[c][i] - mean) * rstd * pa[c][i] + pb[c][i];
      else if (kind == NormKind::kRms) o[i] = v[c][i] * rstd * pa[c][i];
      else o[i] = v[c][i] * rstd * pa[c][i] + pb[c][i];
    }
    store8_out(out + base + ch * 8, o, s);
  }
}

void check_rows(const char* where, ptr_t x, ptr_t out, i64 M, i64 N, unsigned out_align) {
  check_positive(M, where, "M");
  check_positive(N, where, "N");
  check_multiple(N, 8, where, "N");
  check(N <= kMaxN, where, "N = " + std::to_string(N) + " exceeds the row limit " +
                               std::to_string(kMaxN));
  check(M < (1ll << 31), where, "M too large");
  check_ptr(x, where, "x", 16);
  check_ptr(out, where, "out", out_align);
}

template <NormKind kind, typename Out>
void launch(const char* where, const NormParams& p, ptr_t out, i64 M, ptr_t stream) {
  const dim3 grid(static_cast<unsigned>(M)), block(kThreads);
  cudaStream_t s = as_stream(stream);
  const int per_thread = (p.N / 8 + kThreads - 1) / kThreads;
  if (per_thread <= 1) launch_kernel(norm_kernel<kind, Out, 1>,
                                     dim3(grid), dim3(block), 0, s, p, as_ptr<Out>(out));
  else if (per_thread <= 2) launch_kernel(norm_kernel<kind, Out, 2>,
                                          dim3(grid), dim3(block), 0, s, p, as_ptr<Out>(out));
  else launch_kernel(norm_kernel<kind, Out, kChunks>,
                     dim3(grid), dim3(block), 0, s, p, as_ptr<Out>(out));
  check_launch(where);
}

// fp8 output needs the device-side scale; bf16 output takes none.
template <NormKind kind>
void launch_out(const char* where, bool fp8_out, NormParams p, ptr_t out, ptr_t out_scale,
                i64 M, ptr_t stream) {
  if (fp8_out) {
    check_ptr(out_scale, where, "out_scale", 4);
    p.out_scale = as_ptr<const float>(out_scale);
    launch<kind, fp8>(where, p, out, M, stream);
  } else {
    launch<kind, bf16>(where, p, out, M, stream);
  }
}

NormParams base_params(ptr_t x, i64 N, float eps) {
  NormParams p{};
  p.x = as_ptr<const bf16>(x);
  p.N = static_cast<int>(N);
  p.eps = eps;
  p.rows_per_cond = 1;
  return p;
}

void layernorm_impl(const char* where, bool fp8_out, ptr_t x, ptr_t w, ptr_t b, ptr_t out,
                    ptr_t out_scale, i64 M, i64 N, float eps, ptr_t stream) {
  check_rows(where, x, out, M, N, fp8_out ? 8 : 16);
  check_ptr(w, where, "w", 16);
  check_ptr(b, where, "b", 16);
  NormParams p = base_params(x, N, eps);
  p.w = as_ptr<const bf16>(w);
  p.b = as_ptr<const bf16>(b);
  launch_out<NormKind::kLayer>(where, fp8_out, p, out, out_scale, M, stream);
}

void rmsnorm_impl(const char* where, bool fp8_out, ptr_t x, ptr_t w, ptr_t out,
                  ptr_t out_scale, i64 M, i64 N, float eps, bool add_one, ptr_t stream) {
  check_rows(where, x, out, M, N, fp8_out ? 8 : 16);
  check_ptr(w, where, "w", 16, /*nullable=*/true);
  check(w != 0 || !add_one, where, "add_one=True needs a weight w (1 + w)");
  NormParams p = base_params(x, N, eps);
  p.w = as_ptr<const bf16>(w);
  p.add_one = add_one;
  launch_out<NormKind::kRms>(where, fp8_out, p, out, out_scale, M, stream);
}

void adarms_impl(const char* where, bool fp8_out, ptr_t x, ptr_t y, ptr_t gate_mod,
                 ptr_t mod, ptr_t out, ptr_t out_scale, i64 M, i64 N, float eps,
                 i64 rows_per_cond, ptr_t stream) {
  check_rows(where, x, out, M, N, fp8_out ? 8 : 16);
  check_ptr(mod, where, "mod", 4);
  check(rows_per_cond >= 1, where, "rows_per_cond must be >= 1");
  NormParams p = base_params(x, N, eps);
  p.mod = as_ptr<const float>(mod);
  p.rows_per_cond = static_cast<int>(std::min<i64>(rows_per_cond, M));
  if (y) {
    check_ptr(y, where, "y", 16);
    check_ptr(gate_mod, where, "gate_mod", 4);
    check(y != out && x != out, where, "out must not alias x or y");
    p.y = as_ptr<const bf16>(y);
    p.gate_mod = as_ptr<const float>(gate_mod);
    p.x_out = as_ptr<bf16>(x);
  }
  launch_out<NormKind::kAdaRms>(where, fp8_out, p, out, out_scale, M, stream);
}

}  // namespace

void layernorm_fp8(ptr_t x, ptr_t w, ptr_t b, ptr_t out, ptr_t out_scale, i64 M, i64 N,
                   float eps, ptr_t stream) {
  layernorm_impl("layernorm_fp8", true, x, w, b, out, out_scale, M, N, eps, stream);
}
void layernorm_bf16(ptr_t x, ptr_t w, ptr_t b, ptr_t out, i64 M, i64 N, float eps,
                    ptr_t stream) {
  layernorm_impl("layernorm_bf16", false, x, w, b, out, 0, M, N, eps, stream);
}
void rmsnorm_fp8(ptr_t x, ptr_t w, ptr_t out, ptr_t out_scale, i64 M, i64 N, float eps,
                 bool add_one, ptr_t stream) {
  rmsnorm_impl("rmsnorm_fp8", true, x, w, out, out_scale, M, N, eps, add_one, stream);
}
void rmsnorm_bf16(ptr_t x, ptr_t w, ptr_t out, i64 M, i64 N, float eps, bool add_one,
                  ptr_t stream) {
  rmsnorm_impl("rmsnorm_bf16", false, x, w, out, 0, M, N, eps, add_one, stream);
}
void adarms_fp8(ptr_t x, ptr_t mod, ptr_t out, ptr_t out_scale, i64 M, i64 N, float eps,
                i64 rows_per_cond, ptr_t stream) {
  adarms_impl("adarms_fp8", true, x, 0, 0, mod, out, out_scale, M, N, eps, rows_per_cond,
              stream);
}
void adarms_bf16(ptr_t x, ptr_t mod, ptr_t out, i64 M, i64 N, float eps, i64 rows_per_cond,
                 ptr_t stream) {
  adarms_impl("adarms_bf16", false, x, 0, 0, mod, out, 0, M, N, eps, rows_per_cond, stream);
}
void gated_residual_adarms_fp8(ptr_t x, ptr_t y, ptr_t gate_mod, ptr_t norm_mod, ptr_t out,
                               ptr_t out_scale, i64 M, i64 N, float eps, i64 rows_per_cond,
                               ptr_t stream) {
  check_ptr(y, "gated_residual_adarms_fp8", "y", 16);
  adarms_impl("gated_residual_adarms_fp8", true, x, y, gate_mod, norm_mod, out, out_scale, M,
              N, eps, rows_per_cond, stream);
}

}  // namespace flash_rt
