// Host-only check of gemm_fp8_geglu's accumulator pairing (csrc/gemm_geglu_sm90.cuh).
// CuTe layouts are host-computable: for each kernel config's TiledMma and every thread,
// walk the fragment exactly as the epilogue does (for_each_output_pair) and check with
// the absolute tile coordinates (thr_mma.partition_C of an identity tensor) that
//   - element i is a gate column (n % 16 < 8) and i + kUp is column n + 8 (its up
//     partner), i + 1 / i + kUp + 1 the next column of both, all in the same row;
//   - the output coordinate is (m, out_col(n)), and a synthetic accumulator tile whose
//     weight rows are interleaved as the loader writes them de-interleaves to
//     gate[m, f] / up[m, f] of the un-interleaved weight;
//   - all threads together write every output element of the tile exactly once.
// Build and run (README.md beside this file): no GPU needed.
#include <cstdio>
#include <vector>

#include "gemm_geglu_sm90.cuh"

using namespace cute;
using namespace flash_rt;
using namespace flash_rt::geglu_sm90;

// accumulator column n (interleaved weight row) -> (is_up, un-interleaved gate/up row)
static void weight_row(int n, bool& is_up, int& row) {
  const int I = kGegluInterleave;
  is_up = (n / I) % 2 == 1;
  row = (n / (2 * I)) * I + n % I;
}

template <class Cfg>
static int check(const char* name) {
  using TileShape = typename Cfg::Kernel::TileShape;
  constexpr int BM = size<0>(TileShape{}), BN = size<1>(TileShape{});
  using TiledMma = typename Cfg::TiledMma;
  TiledMma mma;
  const int threads = size(mma);
  int errors = 0, leads = 0, kup = -1;
  std::vector<int> hits(BM * (BN / 2), 0);
  auto err = [&](const char* what, int t, int i) {
    if (++errors <= 10) std::printf("  %s: thread %d element %d: %s\n", name, t, i, what);
  };
  for (int t = 0; t < threads; ++t) {
    auto thr = mma.get_thread_slice(t);
    Tensor tCc = thr.partition_C(make_identity_tensor(make_shape(Int<BM>{}, Int<BN>{})));
    // the kernel's accumulators: partition_fragment_C(tiled_mma, tile shape)
    Tensor acc = partition_fragment_C(mma, make_shape(Int<BM>{}, Int<BN>{}));
    static_assert(cute::is_same_v<decltype(shape(acc)), decltype(shape(tCc))>,
                  "accumulator fragment and coordinate partition differ in shape");
    for_each_output_pair(tCc, [&](auto ic, auto up, int m, int f) {
      constexpr int i = decltype(ic)::value, U = decltype(up)::value;
      kup = U;
      ++leads;
      const int mi = get<0>(tCc(i)), ni = get<1>(tCc(i));
      const int js[3] = {i + 1, i + U, i + U + 1};
      const int dn[3] = {1, kGegluInterleave, kGegluInterleave + 1};
      if (mi != m) err("row of the output differs from the accumulator's", t, i);
      if (ni % (2 * kGegluInterleave) >= kGegluInterleave - 1) err("lead is not a gate column pair", t, i);
      for (int k = 0; k < 3; ++k) {
        if (get<0>(tCc(js[k])) != mi || get<1>(tCc(js[k])) != ni + dn[k])
          err("partner is not at (row, column + {1, 8, 9})", t, i);
      }
      // de-interleave: the values the kernel combines are gate[row] and up[row] of the
      // same un-interleaved weight row f (both for f and for f + 1)
      for (int k = 0; k < 2; ++k) {
        bool g_up, u_up;
        int g_row, u_row;
        weight_row(get<1>(tCc(k == 0 ? i : i + 1)), g_up, g_row);
        weight_row(get<1>(tCc(k == 0 ? i + U : i + U + 1)), u_up, u_row);
        if (g_up || !u_up || g_row != f + k || u_row != f + k)
          err("gate/up rows do not match the output column", t, i);
        if (m < 0 || m >= BM || f + k < 0 || f + k >= BN / 2) err("output outside the tile", t, i);
        else ++hits[m * (BN / 2) + f + k];
      }
    });
  }
  int bad_cover = 0;
  for (int h : hits) bad_cover += (h != 1);
  if (bad_cover) {
    ++errors;
    std::printf("  %s: %d output elements written %s\n", name, bad_cover, "not exactly once");
  }
  std::printf("%s: tile %dx%d, %d stages, %d bytes of shared memory, %d MMA threads, "
              "%d values/thread, kUp = %d, %d lead pairs: %s\n",
              name, BM, BN, int(Cfg::Mainloop::DispatchPolicy::Stages),
              int(Cfg::Kernel::SharedStorageSize), threads,
              int(size(partition_fragment_C(mma, make_shape(Int<BM>{}, Int<BN>{})))), kup, leads,
              errors ? "FAILED" : "ok");
  return errors;
}

int main() {
  int errors = 0;
  errors += check<Config0>("config 0 (cooperative 128x256x128)");
  errors += check<Config1>("config 1 (ping-pong 128x128x128)");
  std::printf(errors ? "pairing check FAILED\n" : "pairing check passed\n");
  return errors ? 1 : 0;
}
