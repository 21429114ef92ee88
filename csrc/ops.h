// Host launchers of flash_rt_kernels. One declaration per public binding; the pybind11
// module (bindings.cpp) only forwards to these. Pointers are raw device addresses
// (uintptr_t), sizes are element counts, matrices are row-major (M rows x N cols).
// Nothing here allocates device memory or synchronises, so every launcher may be
// recorded into a CUDA Graph (except gemm_*_autotune, which times kernels).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace flash_rt {

using ptr_t = uintptr_t;
using i64 = long long;

// ---------------------------------------------------------------- GEMM (gemm_lt.cpp)
enum class Epilogue : int { kNone = 0, kBias = 1, kGelu = 2, kBiasGelu = 3 };
enum class OutType : int { kBF16 = 0, kFP16 = 1, kFP8 = 2, kF32 = 3 };

struct GemmArgs {
  ptr_t a = 0, b = 0, d = 0;            // A (M,K), B (N,K) = weight, D (M,N)
  i64 M = 0, N = 0, K = 0;
  ptr_t a_scale = 0, b_scale = 0;       // FP8 only: device float* dequant scales
  ptr_t bias = 0;                       // (N,) in the output's 16-bit type (bf16 for FP8 out)
  ptr_t c = 0;                          // residual (M,N), same 16-bit type; may equal d
  Epilogue epilogue = Epilogue::kNone;
  OutType out_type = OutType::kBF16;
  ptr_t d_scale_inv = 0;                // FP8 out only: device float* multiplier 1/s_out
  ptr_t workspace = 0;
  size_t workspace_bytes = 0;
  bool fast_accum = false;              // FP8 only
  ptr_t stream = 0;
  // Internal callers only (attention_gemm.cu): B stored (K,N) row-major instead of (N,K),
  // and D = alpha * A @ B. kF32 output is for bf16 GEMMs without epilogue or residual.
  bool b_kn = false;
  float alpha = 1.f;
};

struct AutotuneResult {
  int candidates = 0;      // algorithms timed
  int chosen = 0;          // index (in heuristic order) of the fastest
  float best_us = 0.f;     // mean time of the chosen algorithm
  float heuristic_us = 0.f;// mean time of the heuristic's first choice
};

void gemm_fp8(const GemmArgs& g);
void gemm_bf16(const GemmArgs& g);
// b_cycle: other weights of the same shape; the timed calls cycle through them (and g.b)
// so candidates are ranked with the weights coming from HBM, as in a model's forward pass.
AutotuneResult gemm_fp8_autotune(const GemmArgs& g, int iters, int max_candidates,
                                 const std::vector<ptr_t>& b_cycle = {});
AutotuneResult gemm_bf16_autotune(const GemmArgs& g, int iters, int max_candidates,
                                  const std::vector<ptr_t>& b_cycle = {});
int gemm_cache_size();
void gemm_cache_clear();

// ---------------------------------------------------------------- GEMM + GeGLU (gemm_geglu_sm90.cu)
// The gate/up weight (2F, K) interleaves gate and up rows in groups of kGegluInterleave:
// rows [2Ij, 2Ij + I) are gate rows [Ij, Ij + I), rows [2Ij + I, 2Ij + 2I) up rows
// [Ij, Ij + I). The one definition; Python reads it as flash_rt_kernels.GEGLU_INTERLEAVE.
constexpr int kGegluInterleave = 8;
// out (M, F) fp8 = gelu_tanh of g times u, quantised with 1 / *out_scale, where
// [g | u] = a_scale * w_scale * A @ W^T (FP8 fast accumulation); one fused kernel,
// Hopper (sm_90a) only. config: the tile config, 0 or 1 (gemm_geglu_sm90.cuh).
void gemm_fp8_geglu(ptr_t a, ptr_t w, ptr_t out, i64 M, i64 F, i64 K, ptr_t a_scale,
                    ptr_t w_scale, ptr_t out_scale, ptr_t workspace, i64 workspace_bytes,
                    ptr_t stream, int config = 0);

// ---------------------------------------------------------------- norms (norm.cu)
void layernorm_fp8(ptr_t x, ptr_t w, ptr_t b, ptr_t out, ptr_t out_scale, i64 M, i64 N,
                   float eps, ptr_t stream);
void layernorm_bf16(ptr_t x, ptr_t w, ptr_t b, ptr_t out, i64 M, i64 N, float eps,
                    ptr_t stream);
void rmsnorm_fp8(ptr_t x, ptr_t w, ptr_t out, ptr_t out_scale, i64 M, i64 N, float eps,
                 bool add_one, ptr_t stream);
void rmsnorm_bf16(ptr_t x, ptr_t w, ptr_t out, i64 M, i64 N, float eps, bool add_one,
                  ptr_t stream);
void adarms_fp8(ptr_t x, ptr_t mod, ptr_t out, ptr_t out_scale, i64 M, i64 N, float eps,
                i64 rows_per_cond, ptr_t stream);
void adarms_bf16(ptr_t x, ptr_t mod, ptr_t out, i64 M, i64 N, float eps, i64 rows_per_cond,
                 ptr_t stream);
void gated_residual_adarms_fp8(ptr_t x, ptr_t y, ptr_t gate_mod, ptr_t norm_mod, ptr_t out,
                               ptr_t out_scale, i64 M, i64 N, float eps, i64 rows_per_cond,
                               ptr_t stream);

// ---------------------------------------------------------------- elementwise (elementwise.cu)
void gated_residual(ptr_t x, ptr_t y, ptr_t mod, i64 M, i64 N, i64 rows_per_cond,
                    ptr_t stream);
void geglu_fp8(ptr_t gu, ptr_t out, ptr_t out_scale, i64 M, i64 F, ptr_t stream);
void geglu_bf16(ptr_t gu, ptr_t out, i64 M, i64 F, ptr_t stream);
void silu_bf16(ptr_t x, ptr_t out, i64 n, ptr_t stream);
void quantize_fp8_static(ptr_t x, ptr_t out, ptr_t scale, i64 n, ptr_t stream);
void quantize_fp8_dynamic(ptr_t x, ptr_t out, ptr_t scale_out, ptr_t amax_ws, i64 n,
                          ptr_t stream);
void amax_update(ptr_t x, i64 n, ptr_t amax, ptr_t stream);
void euler_step(ptr_t x, ptr_t v, ptr_t x_bf16, i64 n, float dt, ptr_t stream);

// ---------------------------------------------------------------- rope.cu / embed.cu / image.cu
void rope_table(ptr_t table, i64 rows, i64 D, float theta, ptr_t stream);
void rope_qkv_split(ptr_t qkv, ptr_t positions, ptr_t q_out, ptr_t k_cache, ptr_t v_cache,
                    ptr_t cache_offset, i64 M, i64 H, i64 Hkv, i64 D, i64 cache_rows,
                    float theta, float q_scale, ptr_t stream, ptr_t table = 0,
                    i64 table_rows = 0);
void embed_gather(ptr_t ids, ptr_t table, ptr_t out, i64 M, i64 N, i64 vocab, float scale,
                  ptr_t stream);
// Returns (new_h, new_w) actually used for the resize.
std::vector<i64> image_patches(ptr_t src, ptr_t out, i64 H, i64 W, i64 S, i64 P,
                               i64 out_row_stride, ptr_t stream);
std::vector<i64> resized_shape(i64 H, i64 W, i64 S);

// ---------------------------------------------------------------- attention (attention.cu)
struct AttnArgs {
  ptr_t q = 0, k = 0, v = 0, o = 0;
  i64 batch = 1, Lq = 0, Lk = 0, H = 0, Hkv = 0, D = 0;
  i64 q_row = 0, k_row = 0, v_row = 0, o_row = 0;      // row strides (elements)
  i64 q_batch = 0, k_batch = 0, v_batch = 0, o_batch = 0;
  float scale = 1.f;
  ptr_t kv_len = 0;        // int32 (batch,) device; keys used = clamp(kv_len[b] + kv_len_add, 0, Lk)
  i64 kv_len_add = 0;
  ptr_t key_mask = 0;      // uint8 (batch, Lk) device; 0 = masked (finite mask constant)
  ptr_t out_scale = 0;     // float32 device scalar: o is FP8 e4m3 (o = out / *out_scale)
  i64 splits = 1;
  ptr_t workspace = 0;
  size_t workspace_bytes = 0;
  ptr_t stream = 0;
};
void attention(const AttnArgs& a);

// Single-KV-head attention as GEMM + masked softmax + GEMM (attention_gemm.cu).
size_t attention_mqa_gemm_workspace_bytes(i64 rows, i64 keys_pad);
void attention_mqa_gemm(ptr_t q, ptr_t k_cache, ptr_t v_cache, ptr_t out, i64 n_q,
                        i64 cache_rows, i64 keys_pad, i64 heads, i64 head_dim, ptr_t n_keys,
                        i64 keys_add, float scale, ptr_t key_mask, ptr_t workspace,
                        size_t workspace_bytes, ptr_t gemm_workspace,
                        size_t gemm_workspace_bytes, ptr_t stream);
size_t attention_workspace_bytes(i64 batch, i64 Lq, i64 H, i64 D, i64 splits);

// ---------------------------------------------------------------- expert_megakernel.cu
// One denoising step of the Pi0.5 action expert (all layers) as one persistent launch,
// driven by a task table built on the host; named pointers / sizes (see the binding).
void expert_megakernel(const std::map<std::string, ptr_t>& ptrs,
                       const std::map<std::string, i64>& sizes, float eps, float attn_scale,
                       float theta, ptr_t stream);
int expert_megakernel_smem_bytes();
// Whether this build folds the action projections into the kernel (FLASH_RT_MK_FOLD_IO).
bool expert_megakernel_folds_io();
// Words the counters buffer of a schedule with `counters` counters on `blocks` blocks needs
// in this build (FLASH_RT_MK_BLOCK_FLAGS: one a counter and block).
i64 expert_megakernel_sync_words(i64 counters, i64 blocks);

}  // namespace flash_rt
