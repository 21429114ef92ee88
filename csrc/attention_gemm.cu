// Single-KV-head (MQA) attention as two cuBLASLt GEMMs around a masked softmax.
//
// Pi0.5's Gemma layers are MQA: every query head of every token attends to the same single
// KV head with the same keys (bidirectional prefix; action tokens see the prefix and each
// other), so the R = n_q * heads query rows (400 for the expert's 50 tokens x 8 heads,
// 5696 for a 712-token prefix) form one plain matrix product with the cache:
// S = scale * Q K^T (R x keys_pad, fp32), P = softmax(S) in bf16 (the same rounding of P as
// the flash kernel's P V step), O = P V (R x head_dim). The library's Hopper kernels do the
// tiling; the flash kernel's mma.sync tiles hold one block per SM at head_dim 256.
//
// keys_pad (a multiple of 16, >= cache_rows) columns of S and rows of K/V are read: the
// caller's caches must hold that many rows (padding rows finite, e.g. zeros or the next
// layer's). Keys are rows j < min(*n_keys + keys_add, cache_rows), the others get P = 0;
// key_mask (cache_rows,) == 0 gives the finite mask constant, exactly as attention() does.
#include <cmath>

#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

constexpr int kSoftmaxWarps = 4;

// One warp per row; each lane keeps its VEC float4 chunks of the row in registers.
template <int VEC>
__global__ void __launch_bounds__(kSoftmaxWarps * 32)
masked_softmax_kernel(const float* __restrict__ S, bf16* __restrict__ P, int rows, int cols,
                      int key_rows, const int* __restrict__ n_keys, int n_add,
                      const unsigned char* __restrict__ key_mask) {
  pdl_begin();
  const int row = blockIdx.x * kSoftmaxWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int n = min(max(*n_keys + n_add, 0), key_rows);
  const float* src = S + static_cast<size_t>(row) * cols;
  float x[VEC][4];
  float mx = -INFINITY;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int j0 = (v * 32 + lane) * 4;
    float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
    if (j0 < cols) t = *reinterpret_cast<const float4*>(src + j0);
    const float e[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int j = j0 + i;
      float val = -INFINITY;                                  // not a key
      if (j < n) val = (key_mask && key_mask[j] == 0) ? kMaskValue : e[i];
      x[v][i] = val;
      mx = fmaxf(mx, val);
    }
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float pe = x[v][i] == -INFINITY ? 0.f : __expf(x[v][i] - mx);
      x[v][i] = pe;
      sum += pe;
    }
  }
  sum = warp_sum(sum);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  bf16* dst = P + static_cast<size_t>(row) * cols;
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const int j0 = (v * 32 + lane) * 4;
    if (j0 < cols) {
      __nv_bfloat162 lo = __floats2bfloat162_rn(x[v][0] * inv, x[v][1] * inv);
      __nv_bfloat162 hi = __floats2bfloat162_rn(x[v][2] * inv, x[v][3] * inv);
      uint2 packed = make_uint2(*reinterpret_cast<unsigned*>(&lo), *reinterpret_cast<unsigned*>(&hi));
      *reinterpret_cast<uint2*>(dst + j0) = packed;
    }
  }
}

}  // namespace

size_t attention_mqa_gemm_workspace_bytes(i64 rows, i64 keys_pad) {
  // S (fp32) then P (bf16), each 256-byte aligned
  const size_t s = (static_cast<size_t>(rows) * keys_pad * 4 + 255) / 256 * 256;
  return s + static_cast<size_t>(rows) * keys_pad * 2;
}

void attention_mqa_gemm(ptr_t q, ptr_t k_cache, ptr_t v_cache, ptr_t out, i64 n_q,
                        i64 cache_rows, i64 keys_pad, i64 heads, i64 head_dim, ptr_t n_keys,
                        i64 keys_add, float scale, ptr_t key_mask, ptr_t workspace,
                        size_t workspace_bytes, ptr_t gemm_workspace,
                        size_t gemm_workspace_bytes, ptr_t stream) {
  const char* w = "attention_mqa_gemm";
  check_positive(n_q, w, "n_q");
  check_positive(heads, w, "heads");
  check_positive(head_dim, w, "head_dim");
  check_positive(cache_rows, w, "cache_rows");
  check(keys_pad >= cache_rows, w, "keys_pad must be >= cache_rows");
  check_multiple(keys_pad, 16, w, "keys_pad");
  check_multiple(head_dim, 8, w, "head_dim");
  check(keys_pad <= 2048, w, "keys_pad must be <= 2048 (softmax row held in registers)");
  check_ptr(n_keys, w, "n_keys", 4);
  check_ptr(key_mask, w, "key_mask", 1, true);
  const i64 rows = n_q * heads;
  const size_t need = attention_mqa_gemm_workspace_bytes(rows, keys_pad);
  check(workspace != 0 && workspace_bytes >= need, w,
        "needs a workspace of attention_mqa_gemm_workspace_bytes(...) = " +
            std::to_string(need) + " bytes, got " + std::to_string(workspace_bytes));
  check_ptr(workspace, w, "workspace", 256);
  const ptr_t s_buf = workspace;
  const ptr_t p_buf = workspace + (static_cast<size_t>(rows) * keys_pad * 4 + 255) / 256 * 256;

  GemmArgs qk;  // S = scale * Q K^T: Q (rows, D), K cache (keys_pad, D) = (N, K) layout
  qk.a = q; qk.b = k_cache; qk.d = s_buf; qk.M = rows; qk.N = keys_pad; qk.K = head_dim;
  qk.out_type = OutType::kF32; qk.alpha = scale; qk.stream = stream;
  qk.workspace = gemm_workspace; qk.workspace_bytes = gemm_workspace_bytes;
  gemm_bf16(qk);

  const unsigned blocks = ceil_div(rows, kSoftmaxWarps);
  cudaStream_t s = as_stream(stream);
  const int* nk = as_ptr<const int>(n_keys);
  const auto* km = as_ptr<const unsigned char>(key_mask);
  const int cols = static_cast<int>(keys_pad), r = static_cast<int>(rows);
  const int kr = static_cast<int>(cache_rows), add = static_cast<int>(keys_add);
  const auto* sp = as_ptr<const float>(s_buf);
  auto* pp = as_ptr<bf16>(p_buf);
  const dim3 grid(blocks), block(kSoftmaxWarps * 32);
  if (keys_pad <= 512) {
    launch_kernel(masked_softmax_kernel<4>,
                  dim3(grid), dim3(block), 0, s, sp, pp, r, cols, kr, nk, add, km);
  } else if (keys_pad <= 1024) {
    launch_kernel(masked_softmax_kernel<8>,
                  dim3(grid), dim3(block), 0, s, sp, pp, r, cols, kr, nk, add, km);
  } else {
    launch_kernel(masked_softmax_kernel<16>,
                  dim3(grid), dim3(block), 0, s, sp, pp, r, cols, kr, nk, add, km);
  }
  check_launch("attention_mqa_gemm (softmax)");

  GemmArgs pv;  // O = P V: P (rows, keys_pad), V cache (keys_pad, D) stored (K, N)
  pv.a = p_buf; pv.b = v_cache; pv.d = out; pv.M = rows; pv.N = head_dim; pv.K = keys_pad;
  pv.b_kn = true; pv.stream = stream;
  pv.workspace = gemm_workspace; pv.workspace_bytes = gemm_workspace_bytes;
  gemm_bf16(pv);
}

}  // namespace flash_rt
