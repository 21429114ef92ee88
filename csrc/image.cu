// Camera image -> SigLIP patch-embedding GEMM input in one kernel: resize-with-pad of a
// uint8 HxWx3 image to SxS (bilinear, half-pixel centres, no antialias, round half to
// even, centred zero padding), x/255*2-1, and im2col into (G*G, 3*P*P) rows ordered
// like the conv weight (c, ky, kx). The float arithmetic reproduces torch's CPU
// F.interpolate(mode="bilinear", align_corners=False) step by step (FMA placement
// included), so the uint8 intermediate is bit-identical to the reference.
#include <algorithm>
#include <cmath>

#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

struct Taps {
  int i0, i1;
  float l0, l1;
};

__device__ __forceinline__ Taps taps(int dst, int n_in, int n_out) {
  const float scale = __fdiv_rn(static_cast<float>(n_in), static_cast<float>(n_out));
  float src = __fmaf_rn(scale, __fadd_rn(static_cast<float>(dst), 0.5f), -0.5f);
  src = src < 0.f ? 0.f : src;
  Taps t;
  t.i0 = min(static_cast<int>(floorf(src)), n_in - 1);
  t.l1 = fminf(fmaxf(__fsub_rn(src, static_cast<float>(t.i0)), 0.f), 1.f);
  t.l0 = __fsub_rn(1.f, t.l1);
  t.i1 = t.i0 + (t.i0 < n_in - 1 ? 1 : 0);
  return t;
}

struct ImgParams {
  const unsigned char* src;
  bf16* out;
  int H, W, S, P, G, new_h, new_w, top, left, row_stride;
};

__global__ void image_patches_kernel(ImgParams p) {
  pdl_begin();
  const int kpp = 3 * p.P * p.P;
  const long long total = static_cast<long long>(p.G) * p.G * p.row_stride;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const int k = static_cast<int>(idx % p.row_stride);
    const int patch = static_cast<int>(idx / p.row_stride);
    float val = 0.f;  // zero padding columns beyond 3*P*P
    if (k < kpp) {
      const int c = k / (p.P * p.P);
      const int ky = (k / p.P) % p.P;
      const int kx = k % p.P;
      const int Y = (patch / p.G) * p.P + ky;
      const int X = (patch % p.G) * p.P + kx;
      const int yy = Y - p.top, xx = X - p.left;
      float u8 = 0.f;  // padding pixel (uint8 0)
      if (yy >= 0 && yy < p.new_h && xx >= 0 && xx < p.new_w) {
        const Taps ty = taps(yy, p.H, p.new_h);
        const Taps tx = taps(xx, p.W, p.new_w);
        const unsigned char* r0 = p.src + static_cast<size_t>(ty.i0) * p.W * 3;
        const unsigned char* r1 = p.src + static_cast<size_t>(ty.i1) * p.W * 3;
        const float i00 = r0[tx.i0 * 3 + c], i01 = r0[tx.i1 * 3 + c];
        const float i10 = r1[tx.i0 * 3 + c], i11 = r1[tx.i1 * 3 + c];
        const float top = __fmaf_rn(i00, tx.l0, __fmul_rn(i01, tx.l1));
        const float bot = __fmaf_rn(i10, tx.l0, __fmul_rn(i11, tx.l1));
        const float v = __fmaf_rn(top, ty.l0, __fmul_rn(bot, ty.l1));
        u8 = fminf(fmaxf(rintf(v), 0.f), 255.f);  // round half to even, clamp
      }
      val = __fsub_rn(__fmul_rn(__fdiv_rn(u8, 255.f), 2.f), 1.f);
    }
    p.out[idx] = __float2bfloat16_rn(val);
  }
}

}  // namespace

std::vector<i64> resized_shape(i64 H, i64 W, i64 S) {
  const char* w = "resized_shape";
  check_positive(H, w, "H");
  check_positive(W, w, "W");
  check_positive(S, w, "S");
  // Same double arithmetic as the Python reference: ratio = max(W/S, H/S); int(H/ratio).
  const double ratio = std::max(static_cast<double>(W) / static_cast<double>(S),
                                static_cast<double>(H) / static_cast<double>(S));
  const i64 nh = std::max<i64>(1, static_cast<i64>(static_cast<double>(H) / ratio));
  const i64 nw = std::max<i64>(1, static_cast<i64>(static_cast<double>(W) / ratio));
  return {nh, nw};
}

std::vector<i64> image_patches(ptr_t src, ptr_t out, i64 H, i64 W, i64 S, i64 P,
                               i64 out_row_stride, ptr_t stream) {
  const char* w = "image_patches";
  check_positive(P, w, "P");
  check(S % P == 0, w, "image size S must be a multiple of the patch size P");
  check(out_row_stride >= 3 * P * P, w,
        "out_row_stride must be >= 3*P*P = " + std::to_string(3 * P * P));
  check(H * W * 3 < (1ll << 31), w, "image too large");
  check_ptr(src, w, "src", 1);
  check_ptr(out, w, "out", 2);
  std::vector<i64> nhw = resized_shape(H, W, S);
  ImgParams p{as_ptr<const unsigned char>(src), as_ptr<bf16>(out), static_cast<int>(H),
              static_cast<int>(W), static_cast<int>(S), static_cast<int>(P),
              static_cast<int>(S / P), static_cast<int>(nhw[0]), static_cast<int>(nhw[1]),
              static_cast<int>((S - nhw[0]) / 2), static_cast<int>((S - nhw[1]) / 2),
              static_cast<int>(out_row_stride)};
  const long long total = (S / P) * (S / P) * out_row_stride;
  const unsigned blocks = static_cast<unsigned>(std::min<long long>((total + 255) / 256, 65535ll * 8));
  launch_kernel(image_patches_kernel, dim3(blocks), dim3(256), 0, as_stream(stream), p);
  check_launch(w);
  return nhw;
}

}  // namespace flash_rt
