// RoPE (rotate-half, theta^(2i/D) timescales, positions from a device buffer) fused with
// the split of a merged QKV projection and the write of K/V into a KV cache at a
// device-side row offset, so one captured graph serves any prompt length.
#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

struct RopeParams {
  const bf16* qkv;        // (M, (H + 2 Hkv) D): [q heads | k heads | v heads]
  const int* positions;   // (M,)
  bf16* q_out;            // (M, H D)
  bf16* k_cache;          // (cache_rows, Hkv D)
  bf16* v_cache;
  const int* cache_offset;// (1,) or nullptr (= 0)
  int M, H, Hkv, D, cache_rows;
  float theta, q_scale;
};

// One thread: 8 rotation pairs (i .. i+7 with i+D/2 ..) of one head of one token.
__global__ void rope_kernel(RopeParams p) {
  const int half = p.D / 2;
  const int vec_per_head = half / 8;
  const int heads = p.H + 2 * p.Hkv;
  const long long total = static_cast<long long>(p.M) * heads * vec_per_head;
  const int off = p.cache_offset ? *p.cache_offset : 0;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const int vi = static_cast<int>(idx % vec_per_head);
    const int head = static_cast<int>((idx / vec_per_head) % heads);
    const int m = static_cast<int>(idx / ((long long)vec_per_head * heads));
    const int i0 = vi * 8;
    const bf16* src = p.qkv + static_cast<size_t>(m) * heads * p.D + static_cast<size_t>(head) * p.D;
    float x1[8], x2[8];
    load8(src + i0, x1);
    load8(src + half + i0, x2);
    const int row = off + m;
    if (head >= p.H + p.Hkv) {  // V: plain copy into the cache
      if (row >= 0 && row < p.cache_rows) {
        bf16* dst = p.v_cache + static_cast<size_t>(row) * p.Hkv * p.D +
                    static_cast<size_t>(head - p.H - p.Hkv) * p.D;
        store8(dst + i0, x1);
        store8(dst + half + i0, x2);
      }
      continue;
    }
    const float pos = static_cast<float>(p.positions[m]);
    float o1[8], o2[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      // timescale = theta ** ((2 / D) * i), radians = pos / timescale (fp32, as the reference)
      const float expo = __fmul_rn(__fdiv_rn(2.f, static_cast<float>(p.D)), static_cast<float>(i0 + k));
      const float ts = powf(p.theta, expo);
      const float rad = __fdiv_rn(pos, ts);
      float sn, cs;
      sincosf(rad, &sn, &cs);
      o1[k] = x1[k] * cs - x2[k] * sn;
      o2[k] = x2[k] * cs + x1[k] * sn;
    }
    if (head < p.H) {
#pragma unroll
      for (int k = 0; k < 8; ++k) { o1[k] *= p.q_scale; o2[k] *= p.q_scale; }
      bf16* dst = p.q_out + static_cast<size_t>(m) * p.H * p.D + static_cast<size_t>(head) * p.D;
      store8(dst + i0, o1);
      store8(dst + half + i0, o2);
    } else if (row >= 0 && row < p.cache_rows) {
      bf16* dst = p.k_cache + static_cast<size_t>(row) * p.Hkv * p.D +
                  static_cast<size_t>(head - p.H) * p.D;
      store8(dst + i0, o1);
      store8(dst + half + i0, o2);
    }
  }
}

}  // namespace

void rope_qkv_split(ptr_t qkv, ptr_t positions, ptr_t q_out, ptr_t k_cache, ptr_t v_cache,
                    ptr_t cache_offset, i64 M, i64 H, i64 Hkv, i64 D, i64 cache_rows,
                    float theta, float q_scale, ptr_t stream) {
  const char* w = "rope_qkv_split";
  check_positive(M, w, "M");
  check_positive(H, w, "H");
  check_positive(Hkv, w, "Hkv");
  check_positive(D, w, "D");
  check_positive(cache_rows, w, "cache_rows");
  check_multiple(D, 16, w, "D (head_dim)");
  check_multiple(H, Hkv, w, "H (query heads per KV head)");
  check_ptr(qkv, w, "qkv", 16);
  check_ptr(positions, w, "positions", 4);
  check_ptr(q_out, w, "q_out", 16);
  check_ptr(k_cache, w, "k_cache", 16);
  check_ptr(v_cache, w, "v_cache", 16);
  check_ptr(cache_offset, w, "cache_offset", 4, true);
  check(theta > 0.f, w, "theta must be > 0");
  RopeParams p{as_ptr<const bf16>(qkv), as_ptr<const int>(positions), as_ptr<bf16>(q_out),
               as_ptr<bf16>(k_cache), as_ptr<bf16>(v_cache), as_ptr<const int>(cache_offset),
               static_cast<int>(M), static_cast<int>(H), static_cast<int>(Hkv),
               static_cast<int>(D), static_cast<int>(cache_rows), theta, q_scale};
  const long long total = M * (H + 2 * Hkv) * (D / 16);
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((total + 255) / 256, 65535ll * 8));
  rope_kernel<<<blocks, 256, 0, as_stream(stream)>>>(p);
  check_launch(w);
}

}  // namespace flash_rt
