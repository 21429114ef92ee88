// Exact-softmax attention (flash-style online softmax, fp32 statistics and accumulation,
// bf16 tensor-core MMAs via mma.sync m16n8k16, portable to sm_80+ incl. sm_90/110/120).
//
// Grouped-query packing: the G = H / Hkv query heads that share one KV head are laid out
// as G consecutive "rows" per token, so MQA (G = 8) with few tokens still fills the
// 64-row tiles (decoder: 50 tokens x 8 heads = 400 rows). Keys beyond a device-side
// length are skipped; keys with key_mask == 0 get the finite mask constant (exactly as
// the reference's where(mask, logits, -2.3819763e38)). Split-K (flash-decoding) splits
// the key range over blockIdx.z and merges the partial results in a second kernel.
//
// Two kernels share that contract: attn_kernel_v2 (default; 8 warps, intra-block key split,
// multi-stage K/V ring, see its comment) and the previous attn_kernel (4 warps, one K and
// one V buffer), kept as the fallback for devices whose opt-in shared memory is too small
// for the v2 tiles and selectable with FLASH_RT_ATTN_KERNEL=legacy for A/B measurements.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "ops.h"

#include "attention_tiles.cuh"

namespace flash_rt {
namespace {

using namespace attn_tiles;

// Rows [row0, row0 + nrows) of one (batch, kv-head) into smem (stride SD), zero-filled
// past `valid_rows` and past the real head_dim D.
template <int DP, int SD>
__device__ __forceinline__ void load_kv_tile(bf16* s, const bf16* base, long long row_stride,
                                             int row0, int nrows, int valid_rows, int D) {
  constexpr int kChunks = DP / 8;
  for (int i = threadIdx.x; i < nrows * kChunks; i += kWarps * 32) {
    const int r = i / kChunks, c = i % kChunks;
    const bool ok = (row0 + r) < valid_rows && c * 8 < D;
    const bf16* g = ok ? base + (long long)(row0 + r) * row_stride + c * 8 : base;
    cp_async16(s + r * SD + c * 8, g, ok);
  }
}

template <int DP, int BN>
__global__ void __launch_bounds__(kWarps * 32) attn_kernel(Params p) {
  pdl_begin();
  constexpr int SD = DP + 8;  // padded smem row (conflict-free fragment loads)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* Qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* Ks = Qs + kBlockM * SD;
  bf16* Vs = Ks + BN * SD;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const int b = blockIdx.y / p.Hkv, kvh = blockIdx.y % p.Hkv;
  const int split = blockIdx.z;
  const int rows = p.Lq * p.G;  // packed (token, head-in-group) rows
  const int m0 = blockIdx.x * kBlockM;

  const KeySpan<BN> span(p, b, kvh, split);
  const int kv_len = span.kv_len, blk_lo = span.blk_lo, blk_hi = span.blk_hi, kv_hi = span.kv_hi;
  const bf16* kbase = span.k;
  const bf16* vbase = span.v;
  const unsigned char* mask = span.mask;

  // Q tile (packed rows) + first K tile: group 0; first V tile: group 1.
  {
    constexpr int kChunks = DP / 8;
    for (int i = threadIdx.x; i < kBlockM * kChunks; i += kWarps * 32) {
      const int r = i / kChunks, c = i % kChunks;
      const int R = m0 + r;
      const int t = R / p.G, h = kvh * p.G + R % p.G;
      const bool ok = R < rows && c * 8 < p.D;
      const bf16* g = ok ? p.q + b * p.q_batch + t * p.q_row + (long long)h * p.D + c * 8 : p.q;
      cp_async16(Qs + r * SD + c * 8, g, ok);
    }
  }
  if (blk_lo < blk_hi) load_kv_tile<DP, SD>(Ks, kbase, p.k_row, blk_lo * BN, BN, kv_hi, p.D);
  cp_async_commit();
  if (blk_lo < blk_hi) load_kv_tile<DP, SD>(Vs, vbase, p.v_row, blk_lo * BN, BN, kv_hi, p.D);
  cp_async_commit();

  float o[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};
  const int qr = warp * 16 + gid;  // this thread's rows in the tile: qr, qr + 8

  for (int blk = blk_lo; blk < blk_hi; ++blk) {
    const int j0 = blk * BN;
    cp_async_wait<1>();
    __syncthreads();
    // S = Q K^T for this warp's 16 rows x BN keys.
    float s[BN / 8][4];
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; ++kk) {
      unsigned a[4];
      const bf16* q0 = Qs + qr * SD + kk * 16 + 2 * tig;
      a[0] = lds32(q0);
      a[1] = lds32(q0 + 8 * SD);
      a[2] = lds32(q0 + 8);
      a[3] = lds32(q0 + 8 * SD + 8);
#pragma unroll
      for (int n = 0; n < BN / 8; ++n) {
        const bf16* k0 = Ks + (n * 8 + gid) * SD + kk * 16 + 2 * tig;
        mma_bf16(s[n], a, lds32(k0), lds32(k0 + 8));
      }
    }
    __syncthreads();  // everyone is done with Ks
    const bool more = blk + 1 < blk_hi;
    if (more) {
      load_kv_tile<DP, SD>(Ks, kbase, p.k_row, j0 + BN, BN, kv_hi, p.D);
      cp_async_commit();
    }
    // Online softmax on fp32 logits.
    float mx[2];
    mask_scale_max(s, mx, j0, tig, p.scale, kv_hi, mask);
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);  // finite: the block holds >= 1 key
      alpha[r] = exp2f((m_run[r] - m_new) * kLog2e);
      m_run[r] = m_new;
      l_run[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f((s[n][e] - m_run[e >> 1]) * kLog2e);
        s[n][e] = pe;
        l_run[e >> 1] += pe;
      }
    }
    rescale_rows(o, alpha);
    if (more) cp_async_wait<1>(); else cp_async_wait<0>();
    __syncthreads();  // V tile visible
    // O += P V
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      unsigned a[4];
      p_fragment(a, s, ks);
#pragma unroll
      for (int np = 0; np < DP / 16; ++np) {
        const int mat = lane >> 3;
        const bf16* vp = Vs + (ks * 16 + (lane & 7) + (mat & 1) * 8) * SD + np * 16 + (mat >> 1) * 8;
        unsigned bfr[4];
        ldmatrix_x4_trans(bfr, vp);
        mma_bf16(o[2 * np], a, bfr[0], bfr[1]);
        mma_bf16(o[2 * np + 1], a, bfr[2], bfr[3]);
      }
    }
    __syncthreads();  // everyone is done with Vs
    if (more) {
      load_kv_tile<DP, SD>(Vs, vbase, p.v_row, j0 + BN, BN, kv_hi, p.D);
      cp_async_commit();
    }
  }
  cp_async_wait<0>();

  // Epilogue: full row sums, normalise, write bf16 (or fp32 partials + lse for split-K).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
  store_rows<DP>(p, o, l_run, m0, qr, rows, kvh, b, split, tig,
                 [&](int r) { return m_run[r] + logf(l_run[r]); });
}


// The v2 tile (attention_tiles.cuh) as a plain kernel: one block per (row tile, batch x
// kv head, split).
template <int DP, int BN, int WG, int STAGES, bool QREG>
__global__ void __launch_bounds__(WG * 128) attn_kernel_v2(Params p) {
  pdl_begin();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  attn_v2_tile<DP, BN, WG, STAGES, QREG, BlockSync>(p, smem_raw, blockIdx.x * kBlockM,
                                                    blockIdx.y / p.Hkv, blockIdx.y % p.Hkv,
                                                    blockIdx.z, threadIdx.x);
}

// Split-K merge, one thread per (output row, 8 columns) item.
template <int MAXS>
__global__ void __launch_bounds__(128) attn_combine_kernel(Params p) {
  pdl_begin();
  attn_combine_item<MAXS>(p, blockIdx.x * (long long)blockDim.x + threadIdx.x);
}

void launch_combine(const Params& p, long long rows, cudaStream_t s) {
  const unsigned blocks = ceil_div(rows * (p.D / 8), 128);
  if (p.splits <= 8) launch_kernel(attn_combine_kernel<8>, dim3(blocks), dim3(128), 0, s, p);
  else if (p.splits <= 16) launch_kernel(attn_combine_kernel<16>, dim3(blocks), dim3(128), 0, s, p);
  else if (p.splits <= 32) launch_kernel(attn_combine_kernel<32>, dim3(blocks), dim3(128), 0, s, p);
  else launch_kernel(attn_combine_kernel<64>, dim3(blocks), dim3(128), 0, s, p);
}

template <int DP, int BN>
void launch_dp(const Params& p, dim3 grid, cudaStream_t s) {
  constexpr int smem = (kBlockM + 2 * BN) * (DP + 8) * static_cast<int>(sizeof(bf16));
  static bool attr_set = false;  // one-time, host-side; safe before/inside capture
  if (!attr_set) {
    check_cuda(cudaFuncSetAttribute(attn_kernel<DP, BN>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
               "attention: cudaFuncSetAttribute");
    attr_set = true;
  }
  launch_kernel(attn_kernel<DP, BN>, dim3(grid), dim3(kWarps * 32), smem, s, p);
}


// Largest dynamic shared memory one block may opt into on the current device (v2 tiles
// that do not fit fall back: e.g. sm_120 parts offer ~99 KiB, Hopper 227 KiB).
int max_smem_optin() {
  static int cache[64] = {0};
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "attention: cudaGetDevice");
  if (dev < 0 || dev >= 64) dev = 0;
  if (cache[dev] == 0) {
    int v = 0;
    check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
               "attention: cudaDeviceGetAttribute");
    cache[dev] = v;
  }
  return cache[dev];
}

template <int DP, int BN, int WG, int STAGES, bool QREG>
bool launch_v2(const Params& p, dim3 grid, cudaStream_t s) {
  using C = V2Cfg<DP, BN, WG, STAGES, QREG>;
  if (C::kSmem > max_smem_optin()) return false;
  static bool attr_set = false;
  if (!attr_set) {
    check_cuda(cudaFuncSetAttribute(attn_kernel_v2<DP, BN, WG, STAGES, QREG>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem),
               "attention: cudaFuncSetAttribute");
    attr_set = true;
  }
  launch_kernel(attn_kernel_v2<DP, BN, WG, STAGES, QREG>,
                dim3(grid), dim3(C::kThreads), C::kSmem, s, p);
  return true;
}

// Kernel variant: 0 = legacy attn_kernel, 1 = v2 default. FLASH_RT_ATTN_KERNEL (read per
// call, development only: A/B benchmarks and tests) may pick "legacy", "v2" or the v2
// alternatives (head_dim 256 / 80 only): "v2_qreg" (Q fragments kept in registers; spills
// a few registers at 256), "v2_wg1" (4 warps, no intra-block key split), "v2_bn32" (32-key
// tiles, 4 stages). "v2_qsmem" is an alias of the default (Q fragments from shared memory).
int attn_variant() {
  const char* e = std::getenv("FLASH_RT_ATTN_KERNEL");
  if (!e || !*e || std::strcmp(e, "v2") == 0 || std::strcmp(e, "v2_qsmem") == 0) return 1;
  if (std::strcmp(e, "legacy") == 0) return 0;
  if (std::strcmp(e, "v2_qreg") == 0) return 2;
  if (std::strcmp(e, "v2_wg1") == 0) return 3;
  if (std::strcmp(e, "v2_bn32") == 0) return 4;
  return 1;
}

bool launch_v2_for(const Params& p, dim3 grid, cudaStream_t s, int D, int variant) {
  if (D <= 16) return launch_v2<16, 64, 2, 3, true>(p, grid, s);
  if (D <= 32) return launch_v2<32, 64, 2, 3, true>(p, grid, s);
  if (D <= 64) return launch_v2<64, 64, 2, 3, true>(p, grid, s);
  if (D <= 80) {
    if (variant == 3) return launch_v2<80, 64, 1, 3, true>(p, grid, s);
    return launch_v2<80, 64, 2, 3, true>(p, grid, s);
  }
  if (D <= 128) return launch_v2<128, 64, 2, 3, true>(p, grid, s);
  // head_dim 256 (Gemma prefix / action expert): Q fragments re-read from shared memory
  // (ldmatrix) measured faster than keeping them in registers (255 registers, spills).
  if (variant == 2) return launch_v2<256, 64, 2, 2, true>(p, grid, s);
  if (variant == 3) return launch_v2<256, 32, 1, 3, true>(p, grid, s);
  if (variant == 4) return launch_v2<256, 32, 2, 4, false>(p, grid, s);
  if (launch_v2<256, 64, 2, 2, false>(p, grid, s)) return true;
  return launch_v2<256, 32, 1, 2, false>(p, grid, s);  // ~99 KiB parts (sm_120)
}

}  // namespace

size_t attention_workspace_bytes(i64 batch, i64 Lq, i64 H, i64 D, i64 splits) {
  if (splits <= 1) return 0;
  return static_cast<size_t>(splits) * batch * H * Lq * (D + 1) * sizeof(float);
}

void attention(const AttnArgs& a) {
  const char* w = "attention";
  check_positive(a.batch, w, "batch");
  check_positive(a.Lq, w, "Lq");
  check_positive(a.Lk, w, "Lk");
  check_positive(a.H, w, "H");
  check_positive(a.Hkv, w, "Hkv");
  check_positive(a.D, w, "D");
  check_multiple(a.H, a.Hkv, w, "H (query heads per KV head)");
  check_multiple(a.D, 8, w, "D (head_dim)");
  check(a.D <= 256, w, "head_dim D must be <= 256");
  check(a.splits >= 1 && a.splits <= 64, w, "splits must be in [1, 64]");
  check_ptr(a.q, w, "q", 16);
  check_ptr(a.k, w, "k", 16);
  check_ptr(a.v, w, "v", 16);
  check_ptr(a.o, w, "o", a.out_scale ? 2 : 4);
  check_ptr(a.out_scale, w, "out_scale", 4, true);
  check(a.out_scale == 0 || a.splits >= 2, w,
        "out_scale (FP8 output) needs splits >= 2: the split-K combine writes the FP8 values");
  check_ptr(a.kv_len, w, "kv_len", 4, true);
  check_ptr(a.key_mask, w, "key_mask", 1, true);
  for (auto st : {a.q_row, a.k_row, a.v_row, a.q_batch, a.k_batch, a.v_batch}) {
    check(st % 8 == 0, w, "q/k/v strides must be multiples of 8 elements (16-byte rows), got " +
                              std::to_string(st));
  }
  check(a.o_row % 2 == 0 && a.o_batch % 2 == 0, w, "o strides must be even");
  check(a.q_row >= a.H * a.D && a.o_row >= a.H * a.D, w,
        "q_row/o_row strides must cover H * D elements (rows overlap otherwise)");
  check(a.k_row >= a.Hkv * a.D && a.v_row >= a.Hkv * a.D, w,
        "k_row/v_row strides must cover Hkv * D elements");
  check(a.batch == 1 || (a.q_batch > 0 && a.k_batch > 0 && a.v_batch > 0 && a.o_batch > 0), w,
        "batch > 1 needs batch strides");
  const i64 G = a.H / a.Hkv;
  check(a.Lq * G < (1ll << 30) && a.Lk < (1ll << 30), w, "sequence too long");
  Params p{};
  p.q = as_ptr<const bf16>(a.q); p.k = as_ptr<const bf16>(a.k); p.v = as_ptr<const bf16>(a.v);
  if (a.out_scale) {
    p.o8 = as_ptr<fp8>(a.o);
    p.o_scale = as_ptr<const float>(a.out_scale);
  } else {
    p.o = as_ptr<bf16>(a.o);
  }
  p.Lq = static_cast<int>(a.Lq); p.Lk = static_cast<int>(a.Lk);
  p.H = static_cast<int>(a.H); p.Hkv = static_cast<int>(a.Hkv); p.G = static_cast<int>(G);
  p.D = static_cast<int>(a.D);
  p.q_row = a.q_row; p.k_row = a.k_row; p.v_row = a.v_row; p.o_row = a.o_row;
  p.q_batch = a.q_batch; p.k_batch = a.k_batch; p.v_batch = a.v_batch; p.o_batch = a.o_batch;
  p.scale = a.scale;
  p.scale_log2 = a.scale * kLog2e;
  p.kv_len = as_ptr<const int>(a.kv_len); p.kv_len_add = static_cast<int>(a.kv_len_add);
  p.key_mask = as_ptr<const unsigned char>(a.key_mask);
  p.splits = static_cast<int>(a.splits);
  p.batch = static_cast<int>(a.batch);
  if (a.splits > 1) {
    const size_t need = attention_workspace_bytes(a.batch, a.Lq, a.H, a.D, a.splits);
    check(a.workspace != 0 && a.workspace_bytes >= need, w,
          "splits > 1 needs a workspace of attention_workspace_bytes(...) = " +
              std::to_string(need) + " bytes, got " + std::to_string(a.workspace_bytes));
    check_ptr(a.workspace, w, "workspace", 16);
    p.ws_o = as_ptr<float>(a.workspace);
    p.ws_lse = p.ws_o + static_cast<size_t>(a.splits) * a.batch * a.H * a.Lq * a.D;
  }
  cudaStream_t s = as_stream(a.stream);
  dim3 grid(ceil_div(a.Lq * G, kBlockM), static_cast<unsigned>(a.batch * a.Hkv),
            static_cast<unsigned>(a.splits));
  const int variant = attn_variant();
  if (variant == 0 || !launch_v2_for(p, grid, s, static_cast<int>(a.D), variant)) {
    if (a.D <= 16) launch_dp<16, 64>(p, grid, s);
    else if (a.D <= 32) launch_dp<32, 64>(p, grid, s);
    else if (a.D <= 64) launch_dp<64, 64>(p, grid, s);
    else if (a.D <= 80) launch_dp<80, 64>(p, grid, s);
    else if (a.D <= 128) launch_dp<128, 64>(p, grid, s);
    else launch_dp<256, 32>(p, grid, s);
  }
  check_launch(w);
  if (a.splits > 1) {
    launch_combine(p, a.batch * a.H * a.Lq, s);
    check_launch("attention (split-K combine)");
  }
}

}  // namespace flash_rt
