// Text-embedding gather x scale: out[m] = bf16(float(table[ids[m]]) * scale).
#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

__global__ void embed_kernel(const int* __restrict__ ids, const bf16* __restrict__ table,
                             bf16* __restrict__ out, int N, long long vocab, float scale,
                             long long n_vec) {
  pdl_begin();
  const int nv_row = N / 8;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n_vec;
       i += (long long)gridDim.x * blockDim.x) {
    const long long m = i / nv_row;
    const int col = static_cast<int>(i % nv_row) * 8;
    const long long id = ids[m];
    float v[8];
    if (id >= 0 && id < vocab) {
      load8(table + id * N + col, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(v[k], scale);
    } else {  // out-of-range ids give a zero row (never read outside the table)
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = 0.f;
    }
    store8(out + i * 8, v);
  }
}

}  // namespace

void embed_gather(ptr_t ids, ptr_t table, ptr_t out, i64 M, i64 N, i64 vocab, float scale,
                  ptr_t stream) {
  const char* w = "embed_gather";
  check_positive(M, w, "M");
  check_positive(N, w, "N");
  check_positive(vocab, w, "vocab");
  check_multiple(N, 8, w, "N");
  check_ptr(ids, w, "ids", 4);
  check_ptr(table, w, "table", 16);
  check_ptr(out, w, "out", 16);
  const long long nv = M * N / 8;
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((nv + 255) / 256, 65535ll * 8));
  launch_kernel(embed_kernel, dim3(blocks), dim3(256), 0, as_stream(stream),
                as_ptr<const int>(ids), as_ptr<const bf16>(table), as_ptr<bf16>(out),
                static_cast<int>(N), vocab, scale, nv);
  check_launch(w);
}

}  // namespace flash_rt
