// Types of gemm_fp8_geglu (gemm_geglu_sm90.cu): the CUTLASS SM90 FP8 mainloop configs and
// the GeGLU + FP8 epilogue. A header so that the pairing check program
// (test/kernels/cute_checks/) builds exactly the TiledMma and index math the kernel uses;
// nothing here is arch-gated (the kernel entry point is, in the .cu).
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/detail.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/dispatch_policy.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/gemm/kernel/tile_scheduler.hpp>

#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace geglu_sm90 {

// ---------------------------------------------------------------- accumulator pairing
// Static facts about one thread's accumulator fragment. TcLayout is the layout of
// thr_mma.partition_C(identity tile): fragment index -> (m, n) offset from the thread's
// first element (the thread's own offset lives in the tensor's iterator, not here).
// A "lead" element is a gate element in an even column of the thread's column pair;
// with it the thread holds, in its own registers,
//   i + 1        gate, column + 1          (the second byte of a 2-byte store)
//   i + kUp      up,   column + I          (I = kGegluInterleave)
//   i + kUp + 1  up,   column + I + 1
// The static_asserts below prove this for the fragment offsets; the host program
// test/kernels/cute_checks/geglu_pairing.cu proves it with every thread's absolute
// coordinates (the thread offset keeps each pair inside one I-column group).
template <class TcLayout>
struct Pairing {
  static constexpr int I = kGegluInterleave;
  static constexpr int kSize = int(cute::size(TcLayout{}));

  CUTE_HOST_DEVICE static constexpr int dm(int i) { return int(cute::get<0>(TcLayout{}(i))); }
  CUTE_HOST_DEVICE static constexpr int dn(int i) { return int(cute::get<1>(TcLayout{}(i))); }
  CUTE_HOST_DEVICE static constexpr bool is_lead(int i) { return dn(i) % (2 * I) < I && dn(i) % 2 == 0; }

  // The up partner of element 0 (column + I, same row): its index distance is kUp.
  CUTE_HOST_DEVICE static constexpr int find_up() {
    for (int j = 1; j < kSize; ++j) {
      if (dm(j) == dm(0) && dn(j) == dn(0) + I) return j;
    }
    return -1;
  }
  static constexpr int kUp = find_up();

  // Every lead has its three partners at the fixed distances, and the leads with their
  // partners cover the fragment exactly once (no element is computed twice or dropped).
  CUTE_HOST_DEVICE static constexpr bool valid() {
    if (kUp <= 0) return false;
    int covered = 0;
    for (int i = 0; i < kSize; ++i) {
      if (!is_lead(i)) continue;
      if (i + kUp + 1 >= kSize) return false;
      const int js[3] = {i + 1, i + kUp, i + kUp + 1};
      const int ddn[3] = {1, I, I + 1};
      for (int k = 0; k < 3; ++k) {
        if (dm(js[k]) != dm(i) || dn(js[k]) != dn(i) + ddn[k] || is_lead(js[k])) return false;
      }
      covered += 4;
    }
    return covered == kSize;
  }
};

// Output column of accumulator column n (gate or up; both map to the same f):
// the interleaved weight rows [2Ij, 2Ij + I) are gate rows [Ij, Ij + I).
CUTE_HOST_DEVICE constexpr int out_col(int n) {
  return (n / (2 * kGegluInterleave)) * kGegluInterleave + n % kGegluInterleave;
}

// Calls fn(Int<i>, Int<kUp>, m, f) for every lead element i of a thread's fragment, with
// tCc = thr_mma.partition_C(identity tile) and (m, f) the tile-local output coordinate of
// element i (element i + 1 goes to (m, f + 1)). The kernel's epilogue and the host check
// program both walk the fragment through this function.
template <class TcTensor, class Fn>
CUTE_HOST_DEVICE void for_each_output_pair(TcTensor const& tCc, Fn&& fn) {
  using P = Pairing<cute::remove_cvref_t<decltype(tCc.layout())>>;
  static_assert(cute::is_static<decltype(tCc.layout())>::value, "coordinate layout must be static");
  static_assert(P::valid(), "gate/up pairing does not hold for this TiledMma");
  cute::for_each(cute::make_int_sequence<P::kSize>{}, [&](auto ic) {
    constexpr int i = decltype(ic)::value;
    if constexpr (P::is_lead(i)) {
      const auto c = tCc(i);
      fn(cute::Int<i>{}, cute::Int<P::kUp>{}, static_cast<int>(cute::get<0>(c)),
         out_col(static_cast<int>(cute::get<1>(c))));
    }
  });
}

// ---------------------------------------------------------------- packed stores
// The packed epilogue (configs 2 and 3) writes 8 output bytes a store instead of 2. A lead
// gives its thread two adjacent outputs (f, f + 1) of an 8-output group (one 16-column
// gate/up group of the accumulator); the other six of the group sit in the three other
// threads of its quad (lanes 4q .. 4q + 3, columns 2 * (lane % 4) of every 8-column block),
// in the same fragment index. So a thread's leads in four consecutive groups of one row
// (a "quad base" lead in a group g with g % 4 == 0, and its partners 1, 2, 3 groups to the
// right) are exchanged across the quad: lane k ends up with all 8 bytes of group g + k and
// stores them at once, a warp store covering 32 contiguous bytes of each of 8 rows.
template <class TcLayout>
struct Quads {
  using P = Pairing<TcLayout>;
  static constexpr int kGroupCols = 2 * kGegluInterleave;  // accumulator columns of a group

  // The index distance from element 0 to the element one group to its right (same row):
  // every lead's partners are at multiples of it (valid() proves this).
  CUTE_HOST_DEVICE static constexpr int find_step() {
    for (int j = 1; j < P::kSize; ++j) {
      if (P::dm(j) == P::dm(0) && P::dn(j) == P::dn(0) + kGroupCols) return j;
    }
    return -1;
  }
  static constexpr int kStep = find_step();
  CUTE_HOST_DEVICE static constexpr bool is_base(int i) {
    return P::is_lead(i) && (P::dn(i) / kGroupCols) % 4 == 0;
  }
  // Every base's partners i + k kStep (k = 1, 2, 3) are leads of its row k groups to the
  // right and no bases, and the bases with their partners are all the leads.
  CUTE_HOST_DEVICE static constexpr bool valid() {
    if (kStep <= 0) return false;
    int leads = 0, covered = 0;
    for (int i = 0; i < P::kSize; ++i) {
      leads += P::is_lead(i) ? 1 : 0;
      if (!is_base(i)) continue;
      for (int k = 1; k < 4; ++k) {
        const int j = i + k * kStep;
        if (j >= P::kSize || !P::is_lead(j) || is_base(j) || P::dm(j) != P::dm(i) ||
            P::dn(j) != P::dn(i) + k * kGroupCols)
          return false;
      }
      covered += 4;
    }
    return covered == leads;
  }
};

// Calls fn(Int<i0>, Int<i1>, Int<i2>, Int<i3>, Int<kUp>, m, f) for every quad base i0 of a
// thread's fragment (i1..i3 its partners one, two, three groups to the right), with (m, f)
// the tile-local output coordinate of element i0 (as for_each_output_pair's).
template <class TcTensor, class Fn>
CUTE_HOST_DEVICE void for_each_output_quad(TcTensor const& tCc, Fn&& fn) {
  using Q = Quads<cute::remove_cvref_t<decltype(tCc.layout())>>;
  static_assert(Q::P::valid(), "gate/up pairing does not hold for this TiledMma");
  static_assert(Q::valid(), "the leads do not form whole quads of four groups");
  cute::for_each(cute::make_int_sequence<Q::P::kSize>{}, [&](auto ic) {
    constexpr int i = decltype(ic)::value;
    if constexpr (Q::is_base(i)) {
      const auto c = tCc(i);
      fn(cute::Int<i>{}, cute::Int<i + Q::kStep>{}, cute::Int<i + 2 * Q::kStep>{},
         cute::Int<i + 3 * Q::kStep>{}, cute::Int<Q::P::kUp>{},
         static_cast<int>(cute::get<0>(c)), out_col(static_cast<int>(cute::get<1>(c))));
    }
  });
}

// The exchange of a quad (lane % 4 = `tig`): v[k] is this lane's 2-byte piece of group
// base + k (bytes 2 tig, 2 tig + 1 of that group's 8); returns the 8 bytes of group
// base + tig, gathered from the four lanes. Round d trades with lane tig ^ d through
// shfl_xor(value, d) (the warp shuffle in the kernel; a simulated quad in the host check).
template <class ShflXor>
CUTE_HOST_DEVICE uint64_t quad_gather(const uint32_t (&v)[4], int tig, ShflXor&& shfl_xor) {
  uint64_t chunk = 0;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    const int k = tig ^ d;  // the group lane tig ^ d gathers (and the byte slot it fills here)
    const uint32_t send = k == 0 ? v[0] : k == 1 ? v[1] : k == 2 ? v[2] : v[3];
    const uint32_t got = d == 0 ? send : shfl_xor(send, d);
    chunk |= static_cast<uint64_t>(got & 0xffffu) << (16 * k);
  }
  return chunk;
}

// The first output (tile-local) of the group lane `tig` stores, from its quad base lead's
// output f_lead = 8 base + 2 tig: group base + tig starts at 8 (base + tig).
CUTE_HOST_DEVICE constexpr int packed_first_output(int f_lead, int tig) { return f_lead + 6 * tig; }

// ---------------------------------------------------------------- the epilogue
// Register-to-global epilogue for the SM90 warp-specialised kernels, used through
// cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter (as CUTLASS's own
// DefaultEpilogue is): the consumer warp groups call operator() with their accumulator
// fragment after the mainloop of each tile. It needs no shared memory and no workspace.
// kPacked: 8-byte stores after a quad exchange (for_each_output_quad, quad_gather), else
// one 2-byte store per pair of outputs.
template <bool kPacked>
class GegluEpilogue {
 public:
  // The kernel layer only names these types (and checks the strides' rank).
  using ElementC = cutlass::float_e4m3_t;
  using ElementD = cutlass::float_e4m3_t;
  using StrideC = cute::Stride<int64_t, cute::Int<1>, int64_t>;
  using StrideD = StrideC;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;

  struct SharedStorage {};
  using TensorStorage = SharedStorage;

  struct Arguments {
    fp8* out = nullptr;               // (M, F) row-major
    int F = 0;
    const float* a_scale = nullptr;   // device scalars: real = fp8 * scale
    const float* w_scale = nullptr;
    const float* out_scale = nullptr;
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args,
                                                  void*) {
    return args;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) { return 0; }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*,
                                              cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& shape, Arguments const& args) {
    return args.out != nullptr && 2ll * args.F == static_cast<long long>(cute::get<1>(shape));
  }

  CUTLASS_HOST_DEVICE GegluEpilogue(Params const& p, SharedStorage const& = SharedStorage())
      : params_(p) {}

  CUTLASS_DEVICE bool is_source_needed() { return false; }

  // problem (M, N = 2F, K, L), tile (BLK_M, BLK_N, BLK_K), tile coordinate (m, n, k, l),
  // the thread's accumulators (fp32, unscaled), the TiledMma that produced them.
  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine,
            class FrgLayout, class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK,
                                 BlockCoordMNKL blk_coord_mnkl,
                                 cute::Tensor<FrgEngine, FrgLayout> const& acc,
                                 TiledMma tiled_mma, ResidueMNK, int thread_idx, char*) {
    using namespace cute;
    constexpr int BLK_M = size<0>(BlockShapeMNK{});
    constexpr int BLK_N = size<1>(BlockShapeMNK{});
    static_assert(BLK_N % (2 * kGegluInterleave) == 0, "tile N must hold whole gate/up groups");

    const int M = static_cast<int>(get<0>(problem_shape_mnkl));
    const int row0 = static_cast<int>(get<0>(blk_coord_mnkl)) * BLK_M;
    const int col0 = static_cast<int>(get<1>(blk_coord_mnkl)) * BLK_N;  // accumulator column
    if (row0 >= M) return;  // a cluster's padding tile

    // (m, n) of every accumulator element inside the tile, in the fragment's shape
    auto thr_mma = tiled_mma.get_thread_slice(thread_idx);
    Tensor tCc = thr_mma.partition_C(make_identity_tensor(make_shape(Int<BLK_M>{}, Int<BLK_N>{})));
    static_assert(is_static<FrgLayout>::value &&
                      cute::is_same_v<decltype(shape(FrgLayout{})), decltype(shape(tCc.layout()))>,
                  "accumulator fragment and coordinate partition differ in shape");

    const float scale = *params_.a_scale * *params_.w_scale;
    const float inv_s = 1.f / *params_.out_scale;  // as geglu_fp8 (store8_inv): x * (1/s)
    const int F = params_.F;
    const int f0 = col0 / 2;
    uint8_t* out = reinterpret_cast<uint8_t*>(params_.out);

    // outputs f, f + 1 of lead i as two FP8 bytes (f in the low one)
    const auto pair_of = [&](auto ic, auto up) -> uint32_t {
      constexpr int i = decltype(ic)::value, kUp = decltype(up)::value;
      const float g0 = acc(i) * scale, g1 = acc(i + 1) * scale;
      const float u0 = acc(i + kUp) * scale, u1 = acc(i + kUp + 1) * scale;
      const fp8 q0 = sat_fp8(gelu_tanh(g0) * u0 * inv_s);
      const fp8 q1 = sat_fp8(gelu_tanh(g1) * u1 * inv_s);
      return static_cast<uint32_t>(q0.__x) | (static_cast<uint32_t>(q1.__x) << 8);
    };
    if constexpr (kPacked) {
      const int tig = thread_idx & 3;  // the lane's place in its quad (the host check's fact)
      for_each_output_quad(tCc, [&](auto i0, auto i1, auto i2, auto i3, auto up, int m, int f_tile) {
        // every lane of the warp takes part in the exchange; only the stores are predicated
        const uint32_t v[4] = {pair_of(i0, up), pair_of(i1, up), pair_of(i2, up), pair_of(i3, up)};
        const uint64_t chunk = quad_gather(v, tig, [](uint32_t x, int d) {
          return __shfl_xor_sync(0xffffffffu, x, d);
        });
        const int row = row0 + m;
        const int f = f0 + packed_first_output(f_tile, tig);
        // F % 8 == 0: a group that starts inside F ends inside it
        if (row < M && f < F) *reinterpret_cast<uint64_t*>(out + static_cast<int64_t>(row) * F + f) = chunk;
      });
    } else {
      for_each_output_pair(tCc, [&](auto ic, auto up, int m, int f_tile) {
        const int row = row0 + m;
        const int f = f0 + f_tile;
        // F % I == 0: a gate column inside F has its up partner and f + 1 inside F too
        if (row < M && f < F) {
          *reinterpret_cast<uint16_t*>(out + static_cast<int64_t>(row) * F + f) =
              static_cast<uint16_t>(pair_of(ic, up));
        }
      });
    }
  }

 private:
  Params params_;
};

template <bool kPacked>
using Epilogue =
    cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<GegluEpilogue<kPacked>>;

// ---------------------------------------------------------------- kernel configs
// D = A (M, K) @ B (N = 2F, K)^T: A row-major, B "column-major" (K contiguous, nn.Linear).
template <class TileShape, class ClusterShape, class Schedule, bool Packed = false>
struct Config {
  static constexpr bool kPacked = Packed;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      cutlass::float_e4m3_t, cutlass::layout::RowMajor, 16,
      cutlass::float_e4m3_t, cutlass::layout::ColumnMajor, 16,
      float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<
          static_cast<int>(sizeof(typename Epilogue<Packed>::SharedStorage))>,
      Schedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int>, Mainloop,
                                                      Epilogue<Packed>,
                                                      cutlass::gemm::PersistentScheduler>;
  using TiledMma = typename Mainloop::TiledMma;
};

// config 0: cooperative (2 consumer warp groups share one 128 x 256 tile, each a
//   64 x 256 wgmma), cluster 2 x 1 (the two M tiles of a cluster share the weight tile by
//   TMA multicast), 4 stages of 48 KiB. The largest wgmma N and the least weight traffic
//   per FLOP; the epilogue is not overlapped with the next tile's MMAs.
// config 1: ping-pong (each consumer warp group owns a 128 x 128 tile, two 64 x 128
//   wgmma; one runs its epilogue while the other runs its mainloop), cluster 2 x 1,
//   7 stages of 32 KiB.
// Both: 128 fp32 accumulators per consumer thread, no spills (ptxas, sm_90a). For the
// prefix MLP (M = 712..968, 2F = 32768, K = 2048: (6..8) x 128 = 768..1024 tiles of
// 128 x 256, 5.8..7.8 waves on 132 SMs) the GEMM is compute-bound; which config wins is
// for the GPU to tell (the binding's config argument).
// configs 2 and 3: configs 0 and 1 with the packed epilogue (8-byte stores after a quad
//   exchange, for_each_output_quad): the 2-byte stores filled a quarter of each 32-byte
//   sector they touched (8 rows a warp store), 4x the stores for the same bytes. Not yet
//   measured (issue 15: the fused kernel was 25 % slower than cuBLASLt's GEMM).
template <bool Packed>
using Cooperative = Config<cute::Shape<cute::_128, cute::_256, cute::_128>,
                           cute::Shape<cute::_2, cute::_1, cute::_1>,
                           cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum, Packed>;
template <bool Packed>
using Pingpong = Config<cute::Shape<cute::_128, cute::_128, cute::_128>,
                        cute::Shape<cute::_2, cute::_1, cute::_1>,
                        cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum, Packed>;
using Config0 = Cooperative<false>;
using Config1 = Pingpong<false>;
using Config2 = Cooperative<true>;
using Config3 = Pingpong<true>;
constexpr int kConfigs = 4;
// Output alignment a config's stores need (bytes).
constexpr int kOutAlign[kConfigs] = {2, 2, 8, 8};

}  // namespace geglu_sm90
}  // namespace flash_rt
