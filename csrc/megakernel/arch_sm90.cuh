// Hopper (sm_90a) primitives of the persistent action-expert kernel: mbarriers, bulk
// global->shared copies (the TMA engine, no tensor map), the FP8 warpgroup MMA of the GEMM
// tiles (wgmma e4m3 x e4m3 -> f32) and the bf16 one of the attention tile, operands from
// shared memory (no swizzle for the GEMM tiles; the attention tile's layout may use the
// 128-byte swizzle, see make_desc).
//
// This is the one file of the megakernel with architecture-specific instructions. Outside
// an sm_90a compilation (Thor sm_110a, RTX sm_120a builds) every primitive compiles to a
// trap (the wgmma shapes, CuTe's atoms, to CuTe's invalid-path assert), and the host
// launcher refuses to run on a GPU that is not sm_90 (see expert_megakernel.cu); a
// tcgen05 / sm_120 variant replaces only this file.
//
// Operand layout (PTX ISA, "Shared Memory Matrix Layout", K-major, no swizzle): a matrix is
// tiled into core matrices of 8 rows x 16 bytes stored as 128 contiguous bytes. The
// descriptor's leading byte offset (LBO) is the distance between core matrices adjacent
// in K, the stride byte offset (SBO) between core matrices adjacent in M (A) or N (B).
// Our tiles store core matrix (row group g, K chunk c) at c * LBO + g * 128, so a K range
// of a tile is one contiguous block (one bulk copy).
#pragma once

#include <cstdint>
#include <utility>

// (the m64n24 / m64n48 shapes are CuTe's "extended" ones: tpad 48, the split-tokens switch)
#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif
#include <cute/arch/config.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>

#include "../common.h"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FLASH_RT_MK_SM90 1
#else
#define FLASH_RT_MK_SM90 0
#endif

namespace flash_rt {
namespace mk {

namespace gmma = cute::SM90::GMMA;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---------------------------------------------------------------- mbarrier
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
#if FLASH_RT_MK_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
#else
  __trap();
#endif
}

// Makes the barrier inits visible to the async proxy (the bulk-copy engine).
__device__ __forceinline__ void mbar_init_fence() {
#if FLASH_RT_MK_SM90
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if FLASH_RT_MK_SM90
  asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.shared::cta.b64 st, [%0];\n}\n"
               ::"r"(smem_addr(bar)) : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if FLASH_RT_MK_SM90
  asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n"
               ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#else
  __trap();
#endif
}

// Waits until the barrier's phase with the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if FLASH_RT_MK_SM90
  asm volatile(
      "{\n"
      " .reg .pred done;\n"
      "WAIT_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)), "r"(parity) : "memory");
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- bulk copy (TMA engine)
// `bytes` (multiple of 16) from global `src` to shared `dst`, completing on `bar`.
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes,
                                         uint64_t* bar) {
#if FLASH_RT_MK_SM90
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
      ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
#else
  __trap();
#endif
}

// A TMA tensor map (CUtensorMap's 128 opaque bytes, encoded on the host by
// cuTensorMapEncodeTiled) as a kernel parameter field: the device side needs only its
// address, so this header does not depend on the driver API's cuda.h.
struct alignas(64) TmaMap {
  unsigned long long opaque[16];
};

// The box of the 2-D tensor `map` at element (c0 inner, r0 outer) into shared `dst`,
// completing on `bar`: the hardware applies the map's swizzle and zero-fills rows past the
// tensor's end. `map` lives in the kernel's __grid_constant__ parameters.
__device__ __forceinline__ void tma_load_2d(void* dst, const TmaMap* map, int c0, int r0,
                                            uint64_t* bar) {
#if FLASH_RT_MK_SM90
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3}], [%4];\n"
      ::"r"(smem_addr(dst)), "l"(map), "r"(c0), "r"(r0), "r"(smem_addr(bar)) : "memory");
#else
  __trap();
#endif
}

// An L2 eviction policy whose lines are evicted first: for data read once per launch (the
// weight stream, 17 MB a layer), so that it recycles its own lines instead of evicting what
// later tasks load on their critical path (K/V cache, adaRMS rows, activations, partials).
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy = 0;
#if FLASH_RT_MK_SM90
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
#else
  __trap();
#endif
  return policy;
}

// bulk_g2s with an L2 cache policy (l2_evict_first_policy) on the global reads.
__device__ __forceinline__ void bulk_g2s_hinted(void* dst, const void* src, uint32_t bytes,
                                                uint64_t* bar, uint64_t policy) {
#if FLASH_RT_MK_SM90
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint "
      "[%0], [%1], %2, [%3], %4;\n"
      ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy) : "memory");
#else
  __trap();
#endif
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy reads
// (wgmma operands written by ordinary stores or cp.async).
__device__ __forceinline__ void fence_proxy_async_smem() {
#if FLASH_RT_MK_SM90
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
  __trap();
#endif
}

// Orders generic-proxy global-memory accesses before later async-proxy (bulk copy) accesses
// of this thread: the producer of an activation tile runs it after its stores, the consumer
// after its acquire and before the bulk copy that reads the tile.
__device__ __forceinline__ void fence_proxy_async_global() {
#if FLASH_RT_MK_SM90
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
#else
  __trap();
#endif
}

// ---------------------------------------------------------------- wgmma
// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): bits 0-13 address
// >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 62-63 swizzle mode (kNoSwizzle, or kSwizzle128B:
// within each 1024-byte atom of 8 rows x 128 bytes, 16-byte chunk j of row r sits at chunk
// j ^ r; the atoms must start 1024-byte aligned, base offset 0).
constexpr uint64_t kNoSwizzle = 0, kSwizzle128B = 1;
__device__ __forceinline__ uint64_t make_desc(const void* smem, uint32_t lbo, uint32_t sbo,
                                              uint64_t swizzle = kNoSwizzle) {
  const uint64_t a = (smem_addr(smem) & 0x3FFFF) >> 4;
  return a | (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
         (static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32) | (swizzle << 62);
}

__device__ __forceinline__ void wgmma_fence() {
#if FLASH_RT_MK_SM90
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

// Pins the accumulator registers' definitions on this side of the MMA sequence (an empty
// asm that "writes" them): without it ptxas may move the zeroing moves in between the
// wgmma and then serialises the whole sequence (C7515).
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

__device__ __forceinline__ void wgmma_commit() {
#if FLASH_RT_MK_SM90
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_wait_all() {
#if FLASH_RT_MK_SM90
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#else
  __trap();
#endif
}

// One wgmma shape as CuTe's atom (cute/arch/mma_sm90_gmma.hpp, CUTLASS 4.2: the same
// wgmma.mma_async instruction, its accumulators as Regs separate operands): run(d, da, db,
// accumulate) passes d[0 .. Regs) in order; accumulate = false overwrites D (scale-d 0).
// Outside sm_90a CuTe's atom is an invalid path (never launched: see the top).
template <typename Atom, int Regs>
struct GmmaAtom {
  static constexpr int kRegs = Regs;
  __device__ __forceinline__ static void run(float (&d)[Regs], uint64_t da, uint64_t db, bool acc) {
    run_each(d, da, db, acc, std::make_integer_sequence<int, Regs>{});
  }

 private:
  template <int... I>
  __device__ __forceinline__ static void run_each(float (&d)[Regs], uint64_t da, uint64_t db,
                                                  bool acc, std::integer_sequence<int, I...>) {
    Atom::fma(da, db, d[I]..., acc ? gmma::ScaleOut::One : gmma::ScaleOut::Zero);
  }
};

// D (64 x N, f32, the m64nNk32 accumulator fragment) (+)= A (64 x 32 e4m3) * B (N x 32
// e4m3)^T, both K-major in shared memory. N 8 and 24: FLASH_RT_MK_SPLIT_TOKENS at tpad 16
// and 48 (8 / 24 tokens a warpgroup).
template <int N>
struct Wgmma;
template <> struct Wgmma<8> : GmmaAtom<gmma::MMA_64x8x32_F32E4M3E4M3_SS_TN<>, 4> {};
template <> struct Wgmma<16> : GmmaAtom<gmma::MMA_64x16x32_F32E4M3E4M3_SS_TN<>, 8> {};
template <> struct Wgmma<24> : GmmaAtom<gmma::MMA_64x24x32_F32E4M3E4M3_SS_TN<>, 12> {};
template <> struct Wgmma<32> : GmmaAtom<gmma::MMA_64x32x32_F32E4M3E4M3_SS_TN<>, 16> {};
template <> struct Wgmma<48> : GmmaAtom<gmma::MMA_64x48x32_F32E4M3E4M3_SS_TN<>, 24> {};
template <> struct Wgmma<64> : GmmaAtom<gmma::MMA_64x64x32_F32E4M3E4M3_SS_TN<>, 32> {};

// D = the sum over k < Steps of Mma(A_k, B_k), D zeroed first: the Steps wgmma are issued
// back to back (desc(k, da, db) gives step k's descriptors), then waited for. The
// accumulators are pinned on both sides (wgmma_fence_operands), so nothing lands between
// two wgmma that would make ptxas serialise them.
template <typename Mma, int Steps, int N, typename Desc>
__device__ __forceinline__ void wgmma_product(float (&d)[N], Desc desc) {
#pragma unroll
  for (int i = 0; i < N; ++i) d[i] = 0.f;
  wgmma_fence_operands(d);
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < Steps; ++k) {
    uint64_t da, db;
    desc(k, da, db);
    Mma::run(d, da, db, k > 0);
  }
  wgmma_commit();
  wgmma_wait_all();
  wgmma_fence_operands(d);
}

// ---------------------------------------------------------------- bf16 wgmma (attention)
// D (64 x N, f32) (+)= A (64 x 16 bf16, K-major in shared memory) * B, both operands by
// descriptor. WgmmaBf16<N>: B is N x 16 K-major (the logits: Q K^T, keys as N);
// WgmmaBf16TransB<N>: B is 16 x N MN-major (imm-trans-b = 1: P V with V's rows = keys as
// stored, head dims contiguous). MN-major no-swizzle layout: a core matrix is 8 K-rows of
// 16 bytes along N; SBO steps along N, LBO along K (CuTe's canonical GMMA MN layout
// ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)), read in cute/atom/mma_traits_sm90_gmma.hpp).
template <int N>
struct WgmmaBf16;
template <int N>
struct WgmmaBf16TransB;
template <>
struct WgmmaBf16<32> : GmmaAtom<gmma::MMA_64x32x16_F32BF16BF16_SS<gmma::Major::K, gmma::Major::K>, 16> {};
template <>
struct WgmmaBf16TransB<128>
    : GmmaAtom<gmma::MMA_64x128x16_F32BF16BF16_SS<gmma::Major::K, gmma::Major::MN>, 64> {};

}  // namespace mk
}  // namespace flash_rt
