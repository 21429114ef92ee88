// RoPE (rotate-half, theta^(2i/D) timescales, positions from a device buffer) fused with
// the split of a merged QKV projection and the write of K/V into a KV cache at a
// device-side row offset, so one captured graph serves any prompt length.
//
// The angle math (powf, two IEEE divisions, sincosf per pair) dominates this otherwise
// memory-bound kernel; a (cos, sin) table per (position, pair) built once by rope_table
// with the very same fp32 operations turns it into loads (bit-identical results).
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
  const float4* table;    // (table_rows, D/4) of (cos_i, sin_i, cos_i+1, sin_i+1), or nullptr
  int M, H, Hkv, D, cache_rows, table_rows;
  float theta, q_scale;
};

__global__ void rope_table_kernel(float2* __restrict__ table, int rows, int D, float theta) {
  pdl_begin();
  const int half = D / 2;
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < rows * half;
       idx += gridDim.x * blockDim.x) {
    table[idx] = rope_angle(static_cast<float>(idx / half), idx % half, D, theta);
  }
}

// One thread: 2 rotation pairs (i, i+1 with i+D/2, i+D/2+1) of one head of one token. Without
// the table the angle math is a long dependent chain, so few pairs per thread and many
// threads keep it short (the decoder has only 50 tokens). The table path reads both pairs'
// (cos, sin) as one float4, and the bf16x2 loads/stores below assume the same 2.
constexpr int kPairs = 2;
static_assert(kPairs == 2, "rope_kernel's float4 table read and bf16x2 accesses hold 2 pairs");

__global__ void rope_kernel(RopeParams p) {
  pdl_begin();
  const int half = p.D / 2;
  const int vec_per_head = half / kPairs;
  const int heads = p.H + 2 * p.Hkv;
  const long long total = static_cast<long long>(p.M) * heads * vec_per_head;
  const int off = p.cache_offset ? *p.cache_offset : 0;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const int vi = static_cast<int>(idx % vec_per_head);
    const int head = static_cast<int>((idx / vec_per_head) % heads);
    const int m = static_cast<int>(idx / ((long long)vec_per_head * heads));
    const int i0 = vi * kPairs;
    const bf16* src = p.qkv + static_cast<size_t>(m) * heads * p.D + static_cast<size_t>(head) * p.D;
    const float2 x1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src + i0));
    const float2 x2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src + half + i0));
    const int row = off + m;
    bf16* dst = nullptr;
    float2 o1 = x1, o2 = x2;
    if (head >= p.H + p.Hkv) {  // V: plain copy into the cache
      if (row < 0 || row >= p.cache_rows) continue;
      dst = p.v_cache + static_cast<size_t>(row) * p.Hkv * p.D +
            static_cast<size_t>(head - p.H - p.Hkv) * p.D;
    } else {
      const int ipos = p.positions[m];
      float2 cs[kPairs];
      if (p.table && ipos >= 0 && ipos < p.table_rows) {
        const float4 t = p.table[static_cast<size_t>(ipos) * (half / 2) + i0 / 2];
        cs[0] = make_float2(t.x, t.y);
        cs[1] = make_float2(t.z, t.w);
      } else {  // no table, or a position past it: the same math on the fly
#pragma unroll
        for (int k = 0; k < kPairs; ++k) cs[k] = rope_angle(static_cast<float>(ipos), i0 + k, p.D, p.theta);
      }
      const float a[2] = {x1.x, x1.y}, b[2] = {x2.x, x2.y};
      float r1[2], r2[2];
#pragma unroll
      for (int k = 0; k < kPairs; ++k) {
        r1[k] = a[k] * cs[k].x - b[k] * cs[k].y;
        r2[k] = b[k] * cs[k].x + a[k] * cs[k].y;
      }
      o1 = make_float2(r1[0], r1[1]);
      o2 = make_float2(r2[0], r2[1]);
      if (head < p.H) {
        o1.x *= p.q_scale; o1.y *= p.q_scale; o2.x *= p.q_scale; o2.y *= p.q_scale;
        dst = p.q_out + static_cast<size_t>(m) * p.H * p.D + static_cast<size_t>(head) * p.D;
      } else {
        if (row < 0 || row >= p.cache_rows) continue;
        dst = p.k_cache + static_cast<size_t>(row) * p.Hkv * p.D +
              static_cast<size_t>(head - p.H) * p.D;
      }
    }
    *reinterpret_cast<__nv_bfloat162*>(dst + i0) = __float22bfloat162_rn(o1);
    *reinterpret_cast<__nv_bfloat162*>(dst + half + i0) = __float22bfloat162_rn(o2);
  }
}

}  // namespace

void rope_table(ptr_t table, i64 rows, i64 D, float theta, ptr_t stream) {
  const char* w = "rope_table";
  check_positive(rows, w, "rows");
  check_positive(D, w, "D");
  check_multiple(D, 16, w, "D (head_dim)");
  check(theta > 0.f, w, "theta must be > 0");
  check_ptr(table, w, "table", 16);
  const long long n = rows * (D / 2);
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((n + 255) / 256, 65535ll));
  launch_kernel(rope_table_kernel, dim3(blocks), dim3(256), 0, as_stream(stream),
                as_ptr<float2>(table), static_cast<int>(rows), static_cast<int>(D), theta);
  check_launch(w);
}

void rope_qkv_split(ptr_t qkv, ptr_t positions, ptr_t q_out, ptr_t k_cache, ptr_t v_cache,
                    ptr_t cache_offset, i64 M, i64 H, i64 Hkv, i64 D, i64 cache_rows,
                    float theta, float q_scale, ptr_t stream, ptr_t table, i64 table_rows) {
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
  check_ptr(table, w, "table", 16, true);
  check(table_rows >= 0 && (table != 0 || table_rows == 0), w,
        "table_rows must be >= 0, and 0 without a table");
  RopeParams p{as_ptr<const bf16>(qkv), as_ptr<const int>(positions), as_ptr<bf16>(q_out),
               as_ptr<bf16>(k_cache), as_ptr<bf16>(v_cache), as_ptr<const int>(cache_offset),
               as_ptr<const float4>(table), static_cast<int>(M), static_cast<int>(H),
               static_cast<int>(Hkv), static_cast<int>(D), static_cast<int>(cache_rows),
               static_cast<int>(table_rows), theta, q_scale};
  const long long total = M * (H + 2 * Hkv) * (D / (2 * kPairs));
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((total + 255) / 256, 65535ll * 8));
  launch_kernel(rope_kernel, dim3(blocks), dim3(256), 0, as_stream(stream), p);
  check_launch(w);
}

}  // namespace flash_rt
