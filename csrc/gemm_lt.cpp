// cuBLASLt GEMM runner: FP8 E4M3 x E4M3 and bf16 x bf16, fp32 accumulate, row-major
// D (M,N) = A (M,K) @ B (N,K)^T with fused epilogues (bias, GELU-tanh, bias+GELU) and a
// residual through C (beta = 1). One cached plan per shape/config; an explicit autotune
// times the heuristic's candidates and keeps the fastest measured.
#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "common.h"
#include "ops.h"

namespace flash_rt {
namespace {

const char* lt_status_str(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "NOT_SUPPORTED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "INTERNAL_ERROR";
    default: return "UNKNOWN";
  }
}

void lt_check(cublasStatus_t s, const char* where) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string(where) + ": cuBLASLt error " + lt_status_str(s));
  }
}

cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t h = [] {
    cublasLtHandle_t t = nullptr;
    lt_check(cublasLtCreate(&t), "cublasLtCreate");
    return t;
  }();
  return h;
}

// Largest power of two (<= 256) dividing p; p == 0 counts as fully aligned.
unsigned alignment_of(ptr_t p) {
  if (p == 0) return 256;
  unsigned a = 1;
  while (a < 256 && (p % (a * 2)) == 0) a *= 2;
  return a;
}

using Key = std::tuple<bool /*fp8*/, int /*out*/, int /*epi*/, bool /*has_c*/, i64, i64, i64,
                       size_t /*ws*/, unsigned /*align*/, bool /*fast*/, bool /*b_kn*/>;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr, ld = nullptr;
  std::vector<cublasLtMatmulHeuristicResult_t> heur;  // heuristic order
  int requested = 0;  // candidates asked of the heuristic
  int chosen = 0;
  bool tuned = false;
};

void destroy_plan(Plan* p) {
  if (p->op) cublasLtMatmulDescDestroy(p->op);
  for (auto l : {p->la, p->lb, p->lc, p->ld}) if (l) cublasLtMatrixLayoutDestroy(l);
  delete p;
}

std::mutex g_mu;
std::map<Key, Plan*> g_cache;

cudaDataType_t out_cuda_type(OutType t) {
  switch (t) {
    case OutType::kBF16: return CUDA_R_16BF;
    case OutType::kFP16: return CUDA_R_16F;
    case OutType::kFP8: return CUDA_R_8F_E4M3;
    case OutType::kF32: return CUDA_R_32F;
  }
  return CUDA_R_16BF;
}

cublasLtEpilogue_t lt_epilogue(Epilogue e) {
  switch (e) {
    case Epilogue::kNone: return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::kBias: return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::kGelu: return CUBLASLT_EPILOGUE_GELU;
    case Epilogue::kBiasGelu: return CUBLASLT_EPILOGUE_GELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

bool has_bias(Epilogue e) { return e == Epilogue::kBias || e == Epilogue::kBiasGelu; }

void validate(const GemmArgs& g, bool fp8, const char* where) {
  check_positive(g.M, where, "M");
  check_positive(g.N, where, "N");
  check_positive(g.K, where, "K");
  // FP8 tensor-core GEMMs need K (the leading dimension of both operands) % 16.
  check_multiple(g.K, fp8 ? 16 : 8, where, "K");
  check_multiple(g.N, 8, where, "N");
  check_ptr(g.a, where, "a", 16);
  check_ptr(g.b, where, "b", 16);
  check_ptr(g.d, where, "d", 16);
  check_ptr(g.c, where, "c", 16, true);
  if (has_bias(g.epilogue)) {
    check_ptr(g.bias, where, "bias (epilogue needs a bias)", 16);
  } else {
    check(g.bias == 0, where, "bias given but the epilogue adds none (use BIAS or BIAS_GELU)");
  }
  if (fp8) {
    // cuBLASLt runs no FP8 algorithm with a scale pointer that is only 4-byte aligned
    check_ptr(g.a_scale, where, "a_scale", 16);
    check_ptr(g.b_scale, where, "b_scale", 16);
    // FP8 output (cuBLASLt D scale) ran on the H100 but one element of 8192 in the BIAS
    // test landed more than one e4m3 step from the reference; until that is understood
    // it stays disabled: write bf16 and quantize with quantize_fp8_static / the norms.
    check(g.out_type != OutType::kFP8, where,
          "out_dtype FP8 is disabled (not validated): use BF16 output, then quantize_fp8_static");
    check(g.d_scale_inv == 0, where, "d_scale_inv is reserved for the disabled FP8 output");
    check(g.out_type != OutType::kF32, where, "FP8 GEMMs write bf16 or fp16");
  } else {
    // cuBLASLt pairs bf16 inputs with a bf16 (or fp32) C/D only.
    check(g.out_type == OutType::kBF16 || g.out_type == OutType::kF32, where,
          "bf16 GEMM writes bf16 (or, internally, fp32) output only");
    check(g.out_type != OutType::kF32 || (g.epilogue == Epilogue::kNone && g.c == 0), where,
          "fp32 output takes no epilogue and no residual");
    check(g.a_scale == 0 && g.b_scale == 0 && g.d_scale_inv == 0, where,
          "scale pointers are only used by gemm_fp8");
    check(!g.fast_accum, where, "fast_accum is an FP8 option");
  }
  check(g.workspace_bytes == 0 || g.workspace != 0, where,
        "workspace_bytes > 0 needs a workspace pointer");
  if (g.workspace) check_ptr(g.workspace, where, "workspace", 256);
}

Key make_key(const GemmArgs& g, bool fp8) {
  unsigned al = std::min({alignment_of(g.a), alignment_of(g.b), alignment_of(g.d),
                          alignment_of(g.c)});
  return Key{fp8, static_cast<int>(g.out_type), static_cast<int>(g.epilogue), g.c != 0,
             g.M, g.N, g.K, g.workspace_bytes, al, g.fast_accum, g.b_kn};
}

template <typename T>
void set_attr(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t a, const T& v) {
  lt_check(cublasLtMatmulDescSetAttribute(op, a, &v, sizeof(v)), "cublasLtMatmulDescSetAttribute");
}

// Pointer attributes change per call (the plan is shared by all calls of one shape).
void bind_pointers(Plan* p, const GemmArgs& g, bool fp8) {
  if (fp8) {
    const void* as = as_ptr<void>(g.a_scale);
    const void* bs = as_ptr<void>(g.b_scale);
    set_attr(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, as);
    set_attr(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, bs);
    if (g.out_type == OutType::kFP8) {
      const void* ds = as_ptr<void>(g.d_scale_inv);
      set_attr(p->op, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, ds);
    }
  }
  if (has_bias(g.epilogue)) {
    const void* bp = as_ptr<void>(g.bias);
    set_attr(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bp);
  }
}

Plan* build_plan(const GemmArgs& g, bool fp8, unsigned align, int n_results) {
  auto* p = new Plan();
  try {
    lt_check(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    // Row-major D(M,N) = A(M,K) B(N,K)^T is column-major D^T(N,M) = B (op T) x A^T (op N):
    // cuBLAS "A" is our weight B (ld K, transposed), cuBLAS "B" our activation A (ld K).
    // With b_kn, B is stored (K,N) row-major: column-major (N,K) with ld N, op N.
    cublasOperation_t ta = g.b_kn ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
    set_attr(p->op, CUBLASLT_MATMUL_DESC_TRANSA, ta);
    set_attr(p->op, CUBLASLT_MATMUL_DESC_TRANSB, tb);
    cublasLtEpilogue_t epi = lt_epilogue(g.epilogue);
    set_attr(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, epi);
    cudaDataType_t io16 = g.out_type == OutType::kFP16 ? CUDA_R_16F : CUDA_R_16BF;
    const cudaDataType_t c_type = g.out_type == OutType::kF32 ? CUDA_R_32F : io16;
    if (has_bias(g.epilogue)) {
      cudaDataType_t bt = io16;
      set_attr(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bt);
    }
    if (fp8) {
      int8_t fast = g.fast_accum ? 1 : 0;
      set_attr(p->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast);
    }
    bind_pointers(p, g, fp8);
    cudaDataType_t in_t = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    if (g.b_kn) {
      lt_check(cublasLtMatrixLayoutCreate(&p->la, in_t, g.N, g.K, g.N), "layout A");
    } else {
      lt_check(cublasLtMatrixLayoutCreate(&p->la, in_t, g.K, g.N, g.K), "layout A");
    }
    lt_check(cublasLtMatrixLayoutCreate(&p->lb, in_t, g.K, g.M, g.K), "layout B");
    lt_check(cublasLtMatrixLayoutCreate(&p->lc, c_type, g.N, g.M, g.N), "layout C");
    lt_check(cublasLtMatrixLayoutCreate(&p->ld, out_cuda_type(g.out_type), g.N, g.M, g.N),
             "layout D");

    cublasLtMatmulPreference_t pref = nullptr;
    lt_check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    size_t ws = g.workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    uint32_t al = align;
    for (auto a : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                   CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
      cublasLtMatmulPreferenceSetAttribute(pref, a, &al, sizeof(al));
    }
    p->heur.resize(n_results);
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_handle(), p->op, p->la, p->lb, p->lc,
                                                       p->ld, pref, n_results, p->heur.data(),
                                                       &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      throw std::runtime_error(
          std::string("cuBLASLt has no algorithm for ") + (fp8 ? "FP8" : "bf16") +
          " GEMM M=" + std::to_string(g.M) + " N=" + std::to_string(g.N) +
          " K=" + std::to_string(g.K) + " epilogue=" + std::to_string(int(g.epilogue)) +
          " out=" + std::to_string(int(g.out_type)) + " (status " + lt_status_str(st) + ")");
    }
    p->heur.resize(found);
  } catch (...) {
    destroy_plan(p);
    throw;
  }
  p->requested = n_results;
  return p;
}

// Caller holds g_mu.
Plan* get_plan(const GemmArgs& g, bool fp8, int n_results = 8) {
  Key k = make_key(g, fp8);
  auto it = g_cache.find(k);
  if (it != g_cache.end()) {
    if (it->second->requested >= n_results || it->second->tuned) {
      bind_pointers(it->second, g, fp8);
      return it->second;
    }
  }
  Plan* p = build_plan(g, fp8, std::get<8>(k), n_results);
  if (it != g_cache.end()) {  // re-query with more candidates for autotune
    destroy_plan(it->second);
    it->second = p;
  } else {
    g_cache[k] = p;
  }
  return p;
}

cublasStatus_t run_algo(Plan* p, const GemmArgs& g, int idx) {
  const float alpha = g.alpha;
  const float beta = g.c ? 1.f : 0.f;
  // Without a residual beta is 0 and C is not read: pass D when it has C's 16-bit type
  // (cuBLASLt's in-place form), no pointer when D is FP8 (C == D needs equal types).
  const void* c = g.c ? as_ptr<void>(g.c)
                      : (g.out_type == OutType::kFP8 ? nullptr : as_ptr<void>(g.d));
  return cublasLtMatmul(lt_handle(), p->op, &alpha, as_ptr<void>(g.b), p->la, as_ptr<void>(g.a),
                        p->lb, &beta, c, p->lc, as_ptr<void>(g.d), p->ld, &p->heur[idx].algo,
                        as_ptr<void>(g.workspace), g.workspace_bytes, as_stream(g.stream));
}

void run(const GemmArgs& g, bool fp8, const char* where) {
  validate(g, fp8, where);
  std::lock_guard<std::mutex> lock(g_mu);  // the plan's pointer attributes are per call
  Plan* p = get_plan(g, fp8);
  lt_check(run_algo(p, g, p->chosen), where);
}

AutotuneResult autotune(const GemmArgs& g, bool fp8, int iters, int max_candidates,
                        const std::vector<ptr_t>& b_cycle, const char* where) {
  validate(g, fp8, where);
  check(iters >= 1, where, "iters must be >= 1");
  check(max_candidates >= 1, where, "max_candidates must be >= 1");
  for (ptr_t b : b_cycle) check_ptr(b, where, "b_cycle entry", 16);
  // one call per weight at least, so each timed pass reads every weight once
  iters = std::max(iters, static_cast<int>(b_cycle.size()) + 1);
  cudaStream_t s = as_stream(g.stream);
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(s, &cs), where);
  check(cs == cudaStreamCaptureStatusNone, where,
        "autotune times kernels and cannot run during CUDA Graph capture; tune before capture");
  std::lock_guard<std::mutex> lock(g_mu);
  Plan* p = get_plan(g, fp8, max_candidates);
  // Time GPU work, not launch overhead: each candidate's `iters` calls are captured into a
  // CUDA Graph on a private stream and one replay is timed (an eager loop of small GEMMs
  // measures the host's launch rate, ~10 us per call, and would pick at random).
  check_cuda(cudaStreamSynchronize(s), where);  // inputs produced on the caller's stream
  cudaStream_t ts = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&ts, cudaStreamNonBlocking), where);
  GemmArgs gt = g;
  gt.stream = reinterpret_cast<ptr_t>(ts);
  cudaEvent_t e0, e1;
  check_cuda(cudaEventCreate(&e0), where);
  check_cuda(cudaEventCreate(&e1), where);
  AutotuneResult r;
  float best = 1e30f;
  int best_i = -1;
  for (int i = 0; i < static_cast<int>(p->heur.size()); ++i) {
    if (run_algo(p, gt, i) != CUBLAS_STATUS_SUCCESS) continue;  // support check + warm-up
    if (cudaStreamSynchronize(ts) != cudaSuccess) { cudaGetLastError(); continue; }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    bool ok = cudaStreamBeginCapture(ts, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
    for (int it = 0; ok && it < iters; ++it) {
      const size_t turn = it % (b_cycle.size() + 1);
      gt.b = turn == 0 ? g.b : b_cycle[turn - 1];
      ok = run_algo(p, gt, i) == CUBLAS_STATUS_SUCCESS;
    }
    gt.b = g.b;
    ok = (cudaStreamEndCapture(ts, &graph) == cudaSuccess) && ok;
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    float ms = 0.f;
    if (ok) {
      cudaGraphLaunch(exec, ts);  // warm
      cudaEventRecord(e0, ts);
      cudaGraphLaunch(exec, ts);
      cudaEventRecord(e1, ts);
      ok = cudaEventSynchronize(e1) == cudaSuccess && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (!ok) { cudaGetLastError(); continue; }
    const float us = ms * 1000.f / iters;
    if (i == 0) r.heuristic_us = us;
    ++r.candidates;
    if (us < best) { best = us; best_i = i; }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(ts);
  check(best_i >= 0, where, "no candidate algorithm ran successfully");
  p->chosen = best_i;
  p->tuned = true;
  r.chosen = best_i;
  r.best_us = best;
  return r;
}

}  // namespace

void gemm_fp8(const GemmArgs& g) { run(g, true, "gemm_fp8"); }
void gemm_bf16(const GemmArgs& g) { run(g, false, "gemm_bf16"); }

AutotuneResult gemm_fp8_autotune(const GemmArgs& g, int iters, int max_candidates,
                                 const std::vector<ptr_t>& b_cycle) {
  return autotune(g, true, iters, max_candidates, b_cycle, "gemm_fp8_autotune");
}
AutotuneResult gemm_bf16_autotune(const GemmArgs& g, int iters, int max_candidates,
                                  const std::vector<ptr_t>& b_cycle) {
  return autotune(g, false, iters, max_candidates, b_cycle, "gemm_bf16_autotune");
}

int gemm_cache_size() {
  std::lock_guard<std::mutex> lock(g_mu);
  return static_cast<int>(g_cache.size());
}

void gemm_cache_clear() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& kv : g_cache) destroy_plan(kv.second);
  g_cache.clear();
}

}  // namespace flash_rt
