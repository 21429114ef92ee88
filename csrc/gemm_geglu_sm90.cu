// gemm_fp8_geglu: the prefix language model's MLP up-projection and GeGLU as one Hopper
// kernel. Unfused, a cuBLASLt FP8 GEMM writes gate/up (M, 2F) in bf16 and geglu_fp8
// (elementwise.cu) reads it back: for M = 712..968, F = 16384 that intermediate is ~47 MB
// through HBM twice. Here the GeGLU and the FP8 quantisation run on the accumulators, so
// only the (M, F) FP8 result is written.
//
// Built on CUTLASS 3.x (nvidia-cutlass 4.2 headers): the SM90 TMA warp-specialised FP8
// mainloop with fast accumulation (CollectiveBuilder, persistent tile scheduler) and our
// own register-to-global epilogue (gemm_geglu_sm90.cuh, through CUTLASS's
// Sm90TmaWarpSpecializedAdapter). Two tile configs, each with a 2-byte-store and an 8-byte
// packed-store epilogue (see the .cuh), chosen by `config`.
//
// Layout contract (all row-major, contiguous):
//   a   (M, K)  float8_e4m3fn
//   w   (2F, K) float8_e4m3fn (K contiguous: cuBLASLt's "TN" B), gate and up rows
//       interleaved in groups of I = kGegluInterleave = 8 (ops.h): rows [16j, 16j + 8)
//       are gate rows [8j, 8j + 8), rows [16j + 8, 16j + 16) up rows [8j, 8j + 8).
//       Why 8: in the wgmma accumulator layout a thread holds, in every 8-column group,
//       the same two adjacent columns, so gate column c and up column c (8 to the
//       right) sit in the same thread's registers: no shuffles.
//   out (M, F)  float8_e4m3fn
//   a_scale, w_scale, out_scale: device float scalars (real = fp8 * scale).
// Math, per output element (fp32):
//   g = acc_gate * (a_scale * w_scale), u = acc_up * (a_scale * w_scale)
//   out = sat_fp8(gelu_tanh(g) * u * (1 / out_scale))   (common.h; 1/s as geglu_fp8)
// Differences from the unfused path: g and u are not rounded to bf16 before the GeGLU
// (so results may differ by an e4m3 step where that rounding moved a value across a
// rounding boundary), and the accumulation order inside the GEMM is CUTLASS's, not
// cuBLASLt's (both with FP8 fast accumulation).
// Constraints: M >= 1, F % 8 == 0, K % 16 == 0 (TMA: 16-byte rows), a / w 16-byte
// aligned, out 2-byte aligned (8-byte for the packed configs 2 and 3); M, N and K
// residues of the tiles are handled (TMA zero-fills the loads, the epilogue predicates
// the stores). No workspace is needed
// (the persistent scheduler keeps none); capture-safe: no allocation, no sync.
#include <atomic>
#include <string>

#include "gemm_geglu_sm90.cuh"

namespace flash_rt {
namespace {

using namespace geglu_sm90;

// The CUTLASS kernel exists for sm_90a only: other archs of the module compile an empty
// entry point (the launcher refuses other GPUs and builds without 90a before launching).
template <class Kernel>
__global__ void __launch_bounds__(Kernel::MaxThreadsPerBlock, Kernel::MinBlocksPerMultiprocessor)
gemm_geglu_kernel(const __grid_constant__ typename Kernel::Params params) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ char smem[];
  Kernel op;
  op(params, smem);
#else
  __trap();
#endif
}

constexpr const char* kWhere = "gemm_fp8_geglu";

// The device must be sm_90 and this module built for sm_90a. Returns the device id.
int check_device_arch() {
  return require_sm90a(kWhere, "CUTLASS SM90 kernel", "use gemm_fp8 with bf16 output, then geglu_fp8");
}

template <class Cfg>
void run(ptr_t a, ptr_t w, ptr_t out, int M, int F, int K, ptr_t a_scale, ptr_t w_scale,
         ptr_t out_scale, ptr_t workspace, i64 workspace_bytes, cudaStream_t stream, int dev) {
  using Kernel = typename Cfg::Kernel;
  using StrideA = typename Kernel::StrideA;
  using StrideB = typename Kernel::StrideB;
  using ElementA = typename Kernel::ElementA;
  using ElementB = typename Kernel::ElementB;
  const int N = 2 * F;

  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
             "gemm_fp8_geglu: SM count");
  cutlass::KernelHardwareInfo hw;
  hw.device_id = dev;
  hw.sm_count = sms;

  typename Kernel::Arguments args{};
  args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
  args.problem_shape = cute::make_shape(M, N, K);
  args.mainloop.ptr_A = as_ptr<const ElementA>(a);
  args.mainloop.dA = StrideA{static_cast<int64_t>(K), cute::Int<1>{}, int64_t(0)};
  args.mainloop.ptr_B = as_ptr<const ElementB>(w);
  args.mainloop.dB = StrideB{static_cast<int64_t>(K), cute::Int<1>{}, int64_t(0)};
  args.epilogue.out = as_ptr<fp8>(out);
  args.epilogue.F = F;
  args.epilogue.a_scale = as_ptr<const float>(a_scale);
  args.epilogue.w_scale = as_ptr<const float>(w_scale);
  args.epilogue.out_scale = as_ptr<const float>(out_scale);
  args.hw_info = hw;

  check(Kernel::can_implement(args), kWhere,
        "CUTLASS cannot implement this problem (alignment of M, 2F, K?)");
  const size_t need = Kernel::get_workspace_size(args);
  if (static_cast<size_t>(workspace_bytes) < need) {
    fail(kWhere, "workspace_bytes = " + std::to_string(workspace_bytes) + " is too small: " +
                     "this problem needs " + std::to_string(need));
  }
  // Host only (builds the TMA descriptors); initialize_workspace is a no-op here (the
  // persistent scheduler keeps no workspace) and is not called: it could memset.
  typename Kernel::Params params = Kernel::to_underlying_arguments(args, as_ptr<void>(workspace));

  auto* kernel = &gemm_geglu_kernel<Kernel>;
  constexpr int smem = Kernel::SharedStorageSize;
  // Once per device (a function attribute; setting it again is harmless but not free).
  static std::atomic<unsigned long long> smem_set{0};
  const unsigned long long bit = 1ull << (dev & 63);
  if (!(smem_set.load(std::memory_order_acquire) & bit)) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
               "gemm_fp8_geglu: cudaFuncSetAttribute(shared memory)");
    smem_set.fetch_or(bit, std::memory_order_release);
  }

  using Cluster = typename Kernel::ClusterShape;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = Kernel::get_grid_shape(params);
  cfg.blockDim = Kernel::get_block_shape();
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cute::size<0>(Cluster{});
  attr[0].val.clusterDim.y = cute::size<1>(Cluster{});
  attr[0].val.clusterDim.z = cute::size<2>(Cluster{});
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, params), "gemm_fp8_geglu: launch");
}

}  // namespace

void gemm_fp8_geglu(ptr_t a, ptr_t w, ptr_t out, i64 M, i64 F, i64 K, ptr_t a_scale,
                    ptr_t w_scale, ptr_t out_scale, ptr_t workspace, i64 workspace_bytes,
                    ptr_t stream, int config) {
  const char* wh = kWhere;
  check_positive(M, wh, "M");
  check_positive(F, wh, "F");
  check_positive(K, wh, "K");
  // whole gate/up groups of the interleaved weight
  check_multiple(F, kGegluInterleave, wh, "F");
  // TMA: the rows of a and w (K bytes) must be 16-byte multiples
  check_multiple(K, 16, wh, "K");
  constexpr i64 kMax = (1ll << 31) - 1;  // the kernel's problem shape is int
  check(M <= kMax && 2 * F <= kMax && K <= kMax, wh, "M, 2F and K must be < 2^31");
  check_ptr(a, wh, "a", 16);
  check_ptr(w, wh, "w", 16);
  check_ptr(a_scale, wh, "a_scale", 4);
  check_ptr(w_scale, wh, "w_scale", 4);
  check_ptr(out_scale, wh, "out_scale", 4);
  // the kernel streams a and w while it writes out: overlapping buffers corrupt the result
  const auto overlaps = [](ptr_t p, i64 p_bytes, ptr_t q, i64 q_bytes) {
    return p < q + static_cast<ptr_t>(q_bytes) && q < p + static_cast<ptr_t>(p_bytes);
  };
  check(!overlaps(out, M * F, a, M * K) && !overlaps(out, M * F, w, 2 * F * K), wh,
        "out must not overlap a or w (write the FP8 output to a buffer of its own)");
  check(workspace_bytes >= 0, wh, "workspace_bytes must be >= 0");
  check(workspace_bytes == 0 || workspace != 0, wh,
        "workspace_bytes > 0 needs a workspace pointer");
  if (workspace) check_ptr(workspace, wh, "workspace", 256);
  check(config >= 0 && config < kConfigs, wh,
        "config must be 0 (cooperative 128x256), 1 (ping-pong 128x128), 2 or 3 (0 or 1 with "
        "8-byte packed stores), got " + std::to_string(config));
  check_ptr(out, wh, "out", kOutAlign[config]);  // the config's store width
  const int dev = check_device_arch();
  const cudaStream_t s = as_stream(stream);
  const int m = static_cast<int>(M), f = static_cast<int>(F), k = static_cast<int>(K);
  const auto launch = [&](auto cfg) {
    run<decltype(cfg)>(a, w, out, m, f, k, a_scale, w_scale, out_scale, workspace,
                       workspace_bytes, s, dev);
  };
  switch (config) {
    case 0: launch(Config0{}); break;
    case 1: launch(Config1{}); break;
    case 2: launch(Config2{}); break;
    default: launch(Config3{}); break;
  }
}

}  // namespace flash_rt
