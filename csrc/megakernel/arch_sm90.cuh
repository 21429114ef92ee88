// Hopper (sm_90a) primitives of the persistent action-expert kernel: mbarriers, bulk
// global->shared copies (the TMA engine, no tensor map), the FP8 warpgroup MMA of the GEMM
// tiles (wgmma e4m3 x e4m3 -> f32) and the bf16 one of the attention tile, operands from
// shared memory (no swizzle for the GEMM tiles; the attention tile's layout may use the
// 128-byte swizzle, see make_desc).
//
// This is the one file of the megakernel with architecture-specific instructions. Outside
// an sm_90a compilation (Thor sm_110a, RTX sm_120a builds) every primitive compiles to a
// trap, and the host launcher refuses to run on a GPU that is not sm_90 (see
// expert_megakernel.cu); a tcgen05 / sm_120 variant replaces only this file.
//
// Operand layout (PTX ISA, "Shared Memory Matrix Layout", K-major, no swizzle): a matrix is
// tiled into core matrices of 8 rows x 16 bytes stored as 128 contiguous bytes. The
// descriptor's leading byte offset (LBO) is the distance between core matrices adjacent
// in K, the stride byte offset (SBO) between core matrices adjacent in M (A) or N (B).
// Our tiles store core matrix (row group g, K chunk c) at c * LBO + g * 128, so a K range
// of a tile is one contiguous block (one bulk copy).
#pragma once

#include <cstdint>

#include "../common.h"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FLASH_RT_MK_SM90 1
#else
#define FLASH_RT_MK_SM90 0
#endif

namespace flash_rt {
namespace mk {

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

// D (64 x N, f32, the m64nNk32 accumulator fragment) (+)= A (64 x 32 e4m3) * B (N x 32
// e4m3)^T, both K-major in shared memory. accumulate = false overwrites D.
template <int N>
struct Wgmma;

template <>
struct Wgmma<8> {  // (FLASH_RT_MK_SPLIT_TOKENS at tpad 16: 8 tokens a warpgroup)
  static constexpr int kRegs = 4;
  __device__ __forceinline__ static void run(float (&d)[4], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %6, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3}, %4, %5, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

template <>
struct Wgmma<16> {
  static constexpr int kRegs = 8;
  __device__ __forceinline__ static void run(float (&d)[8], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

template <>
struct Wgmma<32> {
  static constexpr int kRegs = 16;
  __device__ __forceinline__ static void run(float (&d)[16], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
          "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

template <>
struct Wgmma<24> {  // (FLASH_RT_MK_SPLIT_TOKENS at tpad 48: 24 tokens a warpgroup)
  static constexpr int kRegs = 12;
  __device__ __forceinline__ static void run(float (&d)[12], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %14, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n24k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11}, %12, %13, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

template <>
struct Wgmma<48> {
  static constexpr int kRegs = 24;
  __device__ __forceinline__ static void run(float (&d)[24], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %26, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n48k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,"
        "%23}, %24, %25, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
          "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
          "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

template <>
struct Wgmma<64> {
  static constexpr int kRegs = 32;
  __device__ __forceinline__ static void run(float (&d)[32], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,"
        "%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
          "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
          "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
          "+f"(d[31])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};


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
struct WgmmaBf16<32> {
  static constexpr int kRegs = 16;
  __device__ __forceinline__ static void run(float (&d)[16], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}"
        ", %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

template <>
struct WgmmaBf16TransB<128> {
  static constexpr int kRegs = 64;
  __device__ __forceinline__ static void run(float (&d)[64], uint64_t da, uint64_t db, bool acc) {
#if FLASH_RT_MK_SM90
    asm volatile(
        "{\n .reg .pred p;\n setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,"
        "%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,"
        "%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,"
        "%62,%63}"
        ", %64, %65, p, 1, 1, 0, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
          "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(static_cast<int>(acc)));
#else
    __trap();
#endif
  }
};

}  // namespace mk
}  // namespace flash_rt
