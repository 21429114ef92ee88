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

// One config's tile: its threads' coordinates, the errors found, and how often each output
// element of the tile was written (each must be once).
template <class Cfg>
struct TileCheck {
  using TileShape = typename Cfg::Kernel::TileShape;
  static constexpr int BM = size<0>(TileShape{}), BN = size<1>(TileShape{});
  typename Cfg::TiledMma mma;
  const int threads = size(mma);
  const char* name;
  int errors = 0;
  std::vector<int> hits = std::vector<int>(BM * (BN / 2), 0);

  explicit TileCheck(const char* n) : name(n) {}
  void err(const char* what, int t, int i) {
    if (++errors <= 10) std::printf("  %s: thread %d element %d: %s\n", name, t, i, what);
  }
  // thr_mma.partition_C of the tile's identity: (m, n) of thread t's fragment elements
  auto coords(int t) {
    return mma.get_thread_slice(t).partition_C(make_identity_tensor(make_shape(Int<BM>{}, Int<BN>{})));
  }
  void written(int m, int f, int t, int i) {
    if (m < 0 || m >= BM || f < 0 || f >= BN / 2) err("output outside the tile", t, i);
    else ++hits[m * (BN / 2) + f];
  }
  // every output element written exactly once; returns the errors
  int covered() {
    int bad = 0;
    for (int h : hits) bad += (h != 1);
    if (bad) {
      ++errors;
      std::printf("  %s: %d output elements written %s\n", name, bad, "not exactly once");
    }
    return errors;
  }
};

template <class Cfg>
static int check(const char* name) {
  TileCheck<Cfg> c(name);
  constexpr int BM = c.BM, BN = c.BN;
  auto& mma = c.mma;
  int leads = 0, kup = -1;
  auto err = [&](const char* what, int t, int i) { c.err(what, t, i); };
  for (int t = 0; t < c.threads; ++t) {
    Tensor tCc = c.coords(t);
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
        c.written(m, f + k, t, i);
      }
    });
  }
  const int errors = c.covered();
  std::printf("%s: tile %dx%d, %d stages, %d bytes of shared memory, %d MMA threads, "
              "%d values/thread, kUp = %d, %d lead pairs: %s\n",
              name, BM, BN, int(Cfg::Mainloop::DispatchPolicy::Stages),
              int(Cfg::Kernel::SharedStorageSize), c.threads,
              int(size(partition_fragment_C(mma, make_shape(Int<BM>{}, Int<BN>{})))), kup, leads,
              errors ? "FAILED" : "ok");
  return errors;
}

// The packed epilogue's quad exchange (for_each_output_quad, quad_gather and
// packed_first_output, the kernel's own code), run for every thread with a simulated quad:
// each lane's pieces are tagged (lane, group index), the shuffle returns what the partner
// lane sends in that round, and the 8 bytes thread t stores at (m, packed_first_output)
// must be, slot by slot, the outputs (m, 8 g + 2 s, + 1) that lane s of the quad holds for
// the stored group g; every output of the tile stored exactly once.
template <class Cfg>
static int check_quads(const char* name) {
  TileCheck<Cfg> c(name);
  int stores = 0;
  for (int t = 0; t < c.threads; ++t) {
    Tensor tCc = c.coords(t);
    const int tig = t & 3;
    for_each_output_quad(tCc, [&](auto i0, auto i1, auto i2, auto i3, auto, int m, int f_tile) {
      const int idx[4] = {decltype(i0)::value, decltype(i1)::value, decltype(i2)::value,
                          decltype(i3)::value};
      // lane s's piece of group k, tagged: (s << 8) | k
      uint32_t tagged[4][4];
      for (int s = 0; s < 4; ++s)
        for (int k = 0; k < 4; ++k) tagged[s][k] = static_cast<uint32_t>((s << 8) | k);
      // the hardware shuffle: lane tig receives what lane tig ^ d sends in round d, the
      // value that lane's own quad_gather computes as `send` (its piece k = (tig ^ d) ^ d)
      const uint64_t chunk = quad_gather(tagged[tig], tig, [&](uint32_t, int d) {
        const int src = tig ^ d;
        const int k = src ^ d;
        return tagged[src][k];
      });
      const int f = packed_first_output(f_tile, tig);
      if (f % 8 != 0) c.err("stored chunk is not 8-byte aligned in the row", t, idx[0]);
      ++stores;
      for (int slot = 0; slot < 4; ++slot) {
        const uint32_t tag = static_cast<uint32_t>(chunk >> (16 * slot)) & 0xffffu;
        const int s = static_cast<int>(tag >> 8), k = static_cast<int>(tag & 0xff);
        if (s != slot) c.err("a byte slot holds another lane's piece", t, idx[0]);
        if (s < 0 || s > 3 || k < 0 || k > 3) continue;
        // lane s's element for group k, in absolute coordinates
        Tensor sc = c.coords((t & ~3) | s);
        const int ms = get<0>(sc(idx[k])), fs = out_col(get<1>(sc(idx[k])));
        if (ms != m) c.err("a quad partner holds another row", t, idx[0]);
        if (fs != f + 2 * slot) c.err("a piece is not at its byte slot of the chunk", t, idx[0]);
        for (int e = 0; e < 2; ++e) c.written(ms, fs + e, t, idx[0]);
      }
    });
  }
  const int errors = c.covered();
  std::printf("%s: packed stores, %d 8-byte chunks from %d threads: %s\n", name, stores,
              c.threads, errors ? "FAILED" : "ok");
  return errors;
}

int main() {
  int errors = 0;
  errors += check<Config0>("config 0 (cooperative 128x256x128)");
  errors += check<Config1>("config 1 (ping-pong 128x128x128)");
  errors += check<Config2>("config 2 (config 0, packed stores)");
  errors += check<Config3>("config 3 (config 1, packed stores)");
  errors += check_quads<Config2>("config 2");
  errors += check_quads<Config3>("config 3");
  std::printf(errors ? "pairing check FAILED\n" : "pairing check passed\n");
  return errors ? 1 : 0;
}
