// pybind11 module flash_rt_kernels: the only file with m.def. Every binding is
// unconditional and forwards to a launcher in ops.h that is compiled for every GPU_ARCH
// (see docs/kernels.md and test/kernels/test_build_inventory.py). Pointers are Python
// ints (tensor.data_ptr()), `stream` is an int cudaStream_t (torch: stream.cuda_stream).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"
#include "ops.h"

namespace py = pybind11;
using namespace flash_rt;

namespace {

GemmArgs make_gemm(ptr_t a, ptr_t b, ptr_t d, i64 M, i64 N, i64 K, ptr_t a_scale,
                   ptr_t b_scale, ptr_t stream, ptr_t bias, ptr_t c, Epilogue epi, OutType out,
                   ptr_t d_scale_inv, ptr_t ws, size_t ws_bytes, bool fast_accum) {
  GemmArgs g;
  g.a = a; g.b = b; g.d = d; g.M = M; g.N = N; g.K = K;
  g.a_scale = a_scale; g.b_scale = b_scale; g.stream = stream;
  g.bias = bias; g.c = c; g.epilogue = epi; g.out_type = out; g.d_scale_inv = d_scale_inv;
  g.workspace = ws; g.workspace_bytes = ws_bytes; g.fast_accum = fast_accum;
  return g;
}

py::dict autotune_dict(const AutotuneResult& r) {
  py::dict d;
  d["candidates"] = r.candidates;
  d["chosen"] = r.chosen;
  d["best_us"] = r.best_us;
  d["heuristic_us"] = r.heuristic_us;
  return d;
}

AttnArgs attn_base(ptr_t q, ptr_t k, ptr_t v, ptr_t o, ptr_t stream) {
  AttnArgs a;
  a.q = q; a.k = k; a.v = v; a.o = o; a.stream = stream;
  return a;
}

const char* kGemmDoc = R"doc(
{name}: D (M, N) = A (M, K) @ B (N, K)^T [+ bias] [GELU-tanh] [+ C], fp32 accumulate.

Pointers (device, row-major, contiguous):
  a: (M, K) activations; b: (N, K) weight in nn.Linear layout (out_features, in_features);
  d: (M, N) output. {types}
  bias: (N,) added to every row (epilogue BIAS / BIAS_GELU), dtype of the 16-bit output
        (bf16 when out_dtype is FP8). c: optional residual (M, N), same 16-bit dtype,
        D = ... + C (beta = 1); c may equal d (in-place residual add).
  workspace/workspace_bytes: optional cuBLASLt scratch (256-byte aligned); 32 MiB suggested.
Constraints: K % 16 == 0 (FP8) or % 8 (bf16), N % 8 == 0, pointers 16-byte aligned.
Algorithm: the cached per-shape choice ({name}_autotune sets it), else cuBLASLt's first
heuristic. No allocation, no sync: safe inside CUDA Graph capture.
)doc";

std::string gemm_doc(const char* name, const char* types) {
  std::string s = kGemmDoc;
  for (auto [key, val] : {std::pair<std::string, std::string>{"{name}", name}, {"{types}", types}}) {
    for (size_t pos; (pos = s.find(key)) != std::string::npos;) s.replace(pos, key.size(), val);
  }
  return s;
}

}  // namespace

PYBIND11_MODULE(flash_rt_kernels, m) {
  m.doc() = "flash_rt CUDA kernels: raw-pointer launchers, capture-safe (see docs/kernels.md)";
  // Translate our errors here: module-local translators run before the global ones other
  // extensions (torch) register, so our exceptions never reach foreign C++ runtimes.
  // (The crash seen on the device image came from iostreams/locales, see CMakeLists.txt.)
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
  m.attr("MASK_VALUE") = kMaskValue;
  m.attr("E4M3_MAX") = kE4M3Max;
  m.attr("GEGLU_INTERLEAVE") = kGegluInterleave;

  py::enum_<Epilogue>(m, "Epilogue", "GEMM epilogue fused by cuBLASLt")
      .value("NONE", Epilogue::kNone)
      .value("BIAS", Epilogue::kBias)
      .value("GELU", Epilogue::kGelu)
      .value("BIAS_GELU", Epilogue::kBiasGelu);
  py::enum_<OutType>(m, "OutDtype", "GEMM output dtype")
      .value("BF16", OutType::kBF16)
      .value("FP16", OutType::kFP16)
      .value("FP8", OutType::kFP8);

  // ------------------------------------------------------------------ GEMM
  m.def("gemm_fp8",
        [](ptr_t a, ptr_t b, ptr_t d, i64 M, i64 N, i64 K, ptr_t a_scale, ptr_t b_scale,
           ptr_t stream, ptr_t bias, ptr_t c, Epilogue epi, OutType out, ptr_t d_scale_inv,
           ptr_t ws, size_t ws_bytes, bool fast_accum) {
          gemm_fp8(make_gemm(a, b, d, M, N, K, a_scale, b_scale, stream, bias, c, epi, out,
                             d_scale_inv, ws, ws_bytes, fast_accum));
        },
        py::arg("a"), py::arg("b"), py::arg("d"), py::arg("M"), py::arg("N"), py::arg("K"),
        py::arg("a_scale"), py::arg("b_scale"), py::arg("stream"), py::kw_only(),
        py::arg("bias") = 0, py::arg("c") = 0, py::arg("epilogue") = Epilogue::kNone,
        py::arg("out_dtype") = OutType::kBF16, py::arg("d_scale_inv") = 0,
        py::arg("workspace") = 0, py::arg("workspace_bytes") = 0,
        py::arg("fast_accum") = false,
        gemm_doc("gemm_fp8",
                 "a, b: float8_e4m3fn; a_scale, b_scale: device float32 scalars (dequant\n"
                 "  scales, real = fp8 * s); D = a_scale * b_scale * (A @ B^T) + ...\n"
                 "  out_dtype BF16 | FP16 (FP8 output is disabled until validated; d_scale_inv\n"
                 "  is reserved for it and must be 0). fast_accum: Hopper's faster, less\n"
                 "  precise FP8 accumulation (off by default).")
            .c_str());
  m.def("gemm_bf16",
        [](ptr_t a, ptr_t b, ptr_t d, i64 M, i64 N, i64 K, ptr_t stream, ptr_t bias, ptr_t c,
           Epilogue epi, OutType out, ptr_t ws, size_t ws_bytes) {
          gemm_bf16(make_gemm(a, b, d, M, N, K, 0, 0, stream, bias, c, epi, out, 0, ws, ws_bytes,
                              false));
        },
        py::arg("a"), py::arg("b"), py::arg("d"), py::arg("M"), py::arg("N"), py::arg("K"),
        py::arg("stream"), py::kw_only(), py::arg("bias") = 0, py::arg("c") = 0,
        py::arg("epilogue") = Epilogue::kNone, py::arg("out_dtype") = OutType::kBF16,
        py::arg("workspace") = 0, py::arg("workspace_bytes") = 0,
        gemm_doc("gemm_bf16", "a, b: bfloat16; out_dtype BF16 only (cuBLASLt pairs bf16 in with bf16 out).").c_str());
  m.def("gemm_fp8_autotune",
        [](ptr_t a, ptr_t b, ptr_t d, i64 M, i64 N, i64 K, ptr_t a_scale, ptr_t b_scale,
           ptr_t stream, ptr_t bias, ptr_t c, Epilogue epi, OutType out, ptr_t d_scale_inv,
           ptr_t ws, size_t ws_bytes, bool fast_accum, int iters, int max_candidates,
           const std::vector<ptr_t>& b_cycle) {
          return autotune_dict(gemm_fp8_autotune(
              make_gemm(a, b, d, M, N, K, a_scale, b_scale, stream, bias, c, epi, out,
                        d_scale_inv, ws, ws_bytes, fast_accum),
              iters, max_candidates, b_cycle));
        },
        py::arg("a"), py::arg("b"), py::arg("d"), py::arg("M"), py::arg("N"), py::arg("K"),
        py::arg("a_scale"), py::arg("b_scale"), py::arg("stream"), py::kw_only(),
        py::arg("bias") = 0, py::arg("c") = 0, py::arg("epilogue") = Epilogue::kNone,
        py::arg("out_dtype") = OutType::kBF16, py::arg("d_scale_inv") = 0,
        py::arg("workspace") = 0, py::arg("workspace_bytes") = 0,
        py::arg("fast_accum") = false, py::arg("iters") = 20, py::arg("max_candidates") = 16,
        py::arg("b_cycle") = std::vector<ptr_t>{},
        "Time up to max_candidates cuBLASLt algorithms for this exact gemm_fp8 call (same\n"
        "arguments) and cache the fastest measured for the shape: each candidate's `iters`\n"
        "calls are replayed from a CUDA Graph on a private stream (GPU time, not launch rate).\n"
        "b_cycle: other weights of this shape (e.g. the other layers'); the timed calls cycle\n"
        "through b and them, so weights come from HBM as in a forward pass, not from L2.\n"
        "Synchronises the stream and overwrites d (and accumulates into c when c == d):\n"
        "run it on scratch buffers, never during CUDA Graph capture (raises ValueError).\n"
        "Returns {candidates, chosen, best_us, heuristic_us}.");
  m.def("gemm_bf16_autotune",
        [](ptr_t a, ptr_t b, ptr_t d, i64 M, i64 N, i64 K, ptr_t stream, ptr_t bias, ptr_t c,
           Epilogue epi, OutType out, ptr_t ws, size_t ws_bytes, int iters,
           int max_candidates, const std::vector<ptr_t>& b_cycle) {
          return autotune_dict(gemm_bf16_autotune(
              make_gemm(a, b, d, M, N, K, 0, 0, stream, bias, c, epi, out, 0, ws, ws_bytes,
                        false),
              iters, max_candidates, b_cycle));
        },
        py::arg("a"), py::arg("b"), py::arg("d"), py::arg("M"), py::arg("N"), py::arg("K"),
        py::arg("stream"), py::kw_only(), py::arg("bias") = 0, py::arg("c") = 0,
        py::arg("epilogue") = Epilogue::kNone, py::arg("out_dtype") = OutType::kBF16,
        py::arg("workspace") = 0, py::arg("workspace_bytes") = 0, py::arg("iters") = 20,
        py::arg("max_candidates") = 16, py::arg("b_cycle") = std::vector<ptr_t>{},
        "gemm_bf16 counterpart of gemm_fp8_autotune (same contract).");
  m.def("gemm_cache_size", &gemm_cache_size, "Number of cached GEMM plans (shape x config).");
  m.def("gemm_cache_clear", &gemm_cache_clear, "Drop all cached GEMM plans and tunings.");
  m.def("gemm_fp8_geglu", &gemm_fp8_geglu, py::arg("a"), py::arg("w"), py::arg("out"),
        py::arg("M"), py::arg("F"), py::arg("K"), py::arg("a_scale"), py::arg("w_scale"),
        py::arg("out_scale"), py::arg("workspace"), py::arg("workspace_bytes"),
        py::arg("stream"), py::arg("config") = 0,
        "Fused FP8 GEMM + GeGLU + FP8 quantisation (CUTLASS SM90 kernel: Hopper and a module\n"
        "built for 90a only, else ValueError): out (M, F) fp8 = sat(gelu_tanh(g) * u *\n"
        "(1 / *out_scale)) with [g | u] = *a_scale * *w_scale * (a @ w^T), FP8 fast\n"
        "accumulation (meant for K <= 2048). a: (M, K) fp8; w: (2F, K) fp8 with gate and up\n"
        "rows interleaved in groups of GEGLU_INTERLEAVE (rows [16j, 16j+8) = gate rows\n"
        "[8j, 8j+8), rows [16j+8, 16j+16) = up rows [8j, 8j+8)); scales: device float32\n"
        "scalars. g, u are not rounded to bf16 (unlike gemm_fp8 + geglu_fp8). F % 8 == 0,\n"
        "K % 16 == 0, a / w 16-byte aligned, out 2-byte aligned (8-byte for configs 2, 3).\n"
        "workspace (may be 0): the kernel needs none today; workspace_bytes is checked\n"
        "against its need. config: 0 (cooperative 128x256 tile), 1 (ping-pong 128x128), 2 / 3\n"
        "(0 / 1 with 8-byte packed output stores). No allocation, no sync: capture-safe.");

  // ------------------------------------------------------------------ norms
  m.def("layernorm_fp8", &layernorm_fp8, py::arg("x"), py::arg("w"), py::arg("b"),
        py::arg("out"), py::arg("out_scale"), py::arg("M"), py::arg("N"), py::arg("eps"),
        py::arg("stream"),
        "out (M, N) fp8 = sat(LayerNorm(x) * w + b) / s), s = *out_scale (device float32).\n"
        "x: (M, N) bf16 rows; w, b: (N,) bf16. Statistics in fp32 (two-pass variance).\n"
        "N % 8 == 0, N <= 8192. Not in place.");
  m.def("layernorm_bf16", &layernorm_bf16, py::arg("x"), py::arg("w"), py::arg("b"),
        py::arg("out"), py::arg("M"), py::arg("N"), py::arg("eps"), py::arg("stream"),
        "out (M, N) bf16 = LayerNorm(x) * w + b; as layernorm_fp8 without quantisation.\n"
        "out may equal x (in place).");
  m.def("rmsnorm_fp8", &rmsnorm_fp8, py::arg("x"), py::arg("w"), py::arg("out"),
        py::arg("out_scale"), py::arg("M"), py::arg("N"), py::arg("eps"), py::arg("add_one"),
        py::arg("stream"),
        "out (M, N) fp8 = sat(x * rsqrt(mean(x^2) + eps) * g / s), s = *out_scale, with\n"
        "g = 1 + w (add_one=True, Gemma), g = w (add_one=False), or g = 1 when w == 0\n"
        "(weight folded into the next GEMM). x: (M, N) bf16; w: (N,) bf16. fp32 statistics.");
  m.def("rmsnorm_bf16", &rmsnorm_bf16, py::arg("x"), py::arg("w"), py::arg("out"),
        py::arg("M"), py::arg("N"), py::arg("eps"), py::arg("add_one"), py::arg("stream"),
        "rmsnorm_fp8 with a bf16 output (out may equal x).");
  m.def("adarms_fp8", &adarms_fp8, py::arg("x"), py::arg("mod"), py::arg("out"),
        py::arg("out_scale"), py::arg("M"), py::arg("N"), py::arg("eps"),
        py::arg("rows_per_cond"), py::arg("stream"),
        "Pi0.5 adaRMS: out (M, N) fp8 = sat((rms(x) * (1 + scale) + shift) / s).\n"
        "mod: device float32 (conds, 3N) table [scale | shift | gate] (precomputed per flow\n"
        "step: pass the pointer of this step's row block); row m uses cond m // rows_per_cond\n"
        "(pass rows_per_cond >= M for one condition). x: (M, N) bf16.");
  m.def("adarms_bf16", &adarms_bf16, py::arg("x"), py::arg("mod"), py::arg("out"),
        py::arg("M"), py::arg("N"), py::arg("eps"), py::arg("rows_per_cond"),
        py::arg("stream"), "adarms_fp8 with a bf16 output.");
  m.def("gated_residual_adarms_fp8", &gated_residual_adarms_fp8, py::arg("x"), py::arg("y"),
        py::arg("gate_mod"), py::arg("norm_mod"), py::arg("out"), py::arg("out_scale"),
        py::arg("M"), py::arg("N"), py::arg("eps"), py::arg("rows_per_cond"),
        py::arg("stream"),
        "Fused gated_residual + adarms_fp8: x (M, N) bf16 is updated IN PLACE to\n"
        "bf16(x + gate * y) with gate = gate_mod[cond, 2N:3N]; then out = adarms_fp8 of the\n"
        "updated x with norm_mod. Bit-identical to the two separate calls.");

  // ------------------------------------------------------------------ elementwise
  m.def("gated_residual", &gated_residual, py::arg("x"), py::arg("y"), py::arg("mod"),
        py::arg("M"), py::arg("N"), py::arg("rows_per_cond"), py::arg("stream"),
        "IN PLACE x (M, N) bf16 = bf16(x + gate * y), gate = mod[cond(m), 2N:3N] (the fp32\n"
        "[scale | shift | gate] adaRMS table of the norm that produced y's input).");
  m.def("geglu_fp8", &geglu_fp8, py::arg("gu"), py::arg("out"), py::arg("out_scale"),
        py::arg("M"), py::arg("F"), py::arg("stream"),
        "out (M, F) fp8 = sat(gelu_tanh(g) * u / s); gu: (M, 2F) bf16, the output of one GEMM\n"
        "over the gate and up weights with rows interleaved in groups of 8 (gate 8, up 8, ...):\n"
        "g of column f at 16 (f / 8) + f % 8, u 8 columns on. F % 8 == 0.");
  m.def("geglu_bf16", &geglu_bf16, py::arg("gu"), py::arg("out"), py::arg("M"), py::arg("F"),
        py::arg("stream"), "geglu_fp8 with a bf16 (M, F) output.");
  m.def("silu_bf16", &silu_bf16, py::arg("x"), py::arg("out"), py::arg("n"), py::arg("stream"),
        "out (n,) bf16 = bf16(x / (1 + exp(-x))) (swish / SiLU in fp32), x: (n,) bf16;\n"
        "out may be x (in place). n % 8 == 0. Pi0's action-time MLP.");
  m.def("quantize_fp8_static", &quantize_fp8_static, py::arg("x"), py::arg("out"),
        py::arg("scale"), py::arg("n"), py::arg("stream"),
        "out[i] fp8 = sat(x[i] / s), s = *scale (device float32); x: n bf16; n % 8 == 0.\n"
        "Bit-identical to torch (x.float() / s).clamp(-448, 448).to(float8_e4m3fn).");
  m.def("quantize_fp8_dynamic", &quantize_fp8_dynamic, py::arg("x"), py::arg("out"),
        py::arg("scale_out"), py::arg("amax_ws"), py::arg("n"), py::arg("stream"),
        "s = max(amax|x|, 1e-12) / 448 computed on the device, written to *scale_out, and\n"
        "out = quantize(x, s). amax_ws: one device float32 of scratch (zeroed here by a\n"
        "memset node). Three stream operations, capture-safe.");
  m.def("amax_update", &amax_update, py::arg("x"), py::arg("n"), py::arg("amax"),
        py::arg("stream"),
        "Running max for calibration: *amax = max(*amax, max |x|) (no reset; NaN ignored).");
  m.def("euler_step", &euler_step, py::arg("x"), py::arg("v"), py::arg("x_bf16"), py::arg("n"),
        py::arg("dt"), py::arg("stream"),
        "Flow-matching Euler update IN PLACE: x (n,) fp32 = x + dt * v, v: (n,) bf16;\n"
        "x_bf16 (nullable): also writes bf16(x_new). Bit-identical to torch x + dt * v.float().");

  // ------------------------------------------------------------------ rope / embed / image
  m.def("rope_qkv_split", &rope_qkv_split, py::arg("qkv"), py::arg("positions"),
        py::arg("q_out"), py::arg("k_cache"), py::arg("v_cache"), py::arg("cache_offset"),
        py::arg("M"), py::arg("H"), py::arg("Hkv"), py::arg("D"), py::arg("cache_rows"),
        py::arg("theta"), py::arg("q_scale"), py::arg("stream"), py::kw_only(),
        py::arg("table") = 0, py::arg("table_rows") = 0,
        "Split a merged QKV projection and apply RoPE (rotate-half; radians = pos /\n"
        "theta^((2/D) i), i < D/2) to q and k. qkv: (M, (H + 2 Hkv) D) bf16 as\n"
        "[q heads | k heads | v heads]; positions: (M,) int32 device; q_out: (M, H D) bf16\n"
        "= rope(q) * q_scale; k_cache, v_cache: (cache_rows, Hkv D) bf16: token m goes to row\n"
        "*cache_offset + m (int32 device scalar, 0 when cache_offset == 0); rows outside\n"
        "[0, cache_rows) are dropped. D % 16 == 0. table: rope_table's (cos, sin) for\n"
        "positions < table_rows (16-byte aligned; positions past it are computed): the same\n"
        "bits, without the per-pair powf / division / sincosf.");
  m.def("rope_table", &rope_table, py::arg("table"), py::arg("rows"), py::arg("D"),
        py::arg("theta"), py::arg("stream"),
        "Fill table (rows, D/2, 2) float32 with (cos, sin) of pair i at position p, in the\n"
        "fp32 operations rope_qkv_split uses, for rope_qkv_split(table=, table_rows=rows).");
  m.def("embed_gather", &embed_gather, py::arg("ids"), py::arg("table"), py::arg("out"),
        py::arg("M"), py::arg("N"), py::arg("vocab"), py::arg("scale"), py::arg("stream"),
        "out (M, N) bf16 = bf16(table[ids[m]] * scale); ids: (M,) int32 device; table:\n"
        "(vocab, N) bf16. Ids outside [0, vocab) give a zero row.");
  m.def("resized_shape", &resized_shape, py::arg("H"), py::arg("W"), py::arg("S"),
        "(new_h, new_w) of the resize-with-pad of an HxW image to SxS (host only).");
  m.def("image_patches", &image_patches, py::arg("src"), py::arg("out"), py::arg("H"),
        py::arg("W"), py::arg("S"), py::arg("P"), py::arg("out_row_stride"), py::arg("stream"),
        "uint8 camera image -> SigLIP patch rows. src: (H, W, 3) uint8 RGB contiguous;\n"
        "out: (G*G, out_row_stride) bf16, G = S / P, row = patch (row-major over the grid),\n"
        "column c*P*P + ky*P + kx (conv weight order); columns >= 3*P*P are written 0 (pad\n"
        "K to a multiple of 16 for the GEMM). Pixels: resize-with-pad to SxS (see\n"
        "resized_shape; bilinear half-pixel, no antialias, round half even, centred 0 pad),\n"
        "then x / 255 * 2 - 1. Returns (new_h, new_w).");

  // ------------------------------------------------------------------ attention
  m.def("attention_workspace_bytes", &attention_workspace_bytes, py::arg("batch"),
        py::arg("Lq"), py::arg("H"), py::arg("D"), py::arg("splits"),
        "Bytes of scratch the attention bindings need for `splits` > 1 (0 otherwise).");
  m.def("attention",
        [](ptr_t q, ptr_t k, ptr_t v, ptr_t o, i64 batch, i64 Lq, i64 Lk, i64 H, i64 Hkv,
           i64 D, i64 q_row, i64 k_row, i64 v_row, i64 o_row, float scale, ptr_t stream,
           i64 q_batch, i64 k_batch, i64 v_batch, i64 o_batch, ptr_t kv_len, i64 kv_len_add,
           ptr_t key_mask, i64 splits, ptr_t ws, size_t ws_bytes, ptr_t out_scale) {
          AttnArgs a = attn_base(q, k, v, o, stream);
          a.out_scale = out_scale;
          a.batch = batch; a.Lq = Lq; a.Lk = Lk; a.H = H; a.Hkv = Hkv; a.D = D;
          a.q_row = q_row; a.k_row = k_row; a.v_row = v_row; a.o_row = o_row;
          a.q_batch = q_batch; a.k_batch = k_batch; a.v_batch = v_batch; a.o_batch = o_batch;
          a.scale = scale; a.kv_len = kv_len; a.kv_len_add = kv_len_add; a.key_mask = key_mask;
          a.splits = splits; a.workspace = ws; a.workspace_bytes = ws_bytes;
          attention(a);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("o"), py::arg("batch"), py::arg("Lq"),
        py::arg("Lk"), py::arg("H"), py::arg("Hkv"), py::arg("D"), py::arg("q_row"),
        py::arg("k_row"), py::arg("v_row"), py::arg("o_row"), py::arg("scale"),
        py::arg("stream"), py::kw_only(), py::arg("q_batch") = 0, py::arg("k_batch") = 0,
        py::arg("v_batch") = 0, py::arg("o_batch") = 0, py::arg("kv_len") = 0,
        py::arg("kv_len_add") = 0, py::arg("key_mask") = 0, py::arg("splits") = 1,
        py::arg("workspace") = 0, py::arg("workspace_bytes") = 0, py::arg("out_scale") = 0,
        "Generic exact-softmax attention, bf16 in/out, fp32 softmax and accumulation.\n"
        "Head h of token t: q[b*q_batch + t*q_row + h*D + (0..D)] (strides in elements);\n"
        "k, v likewise with Hkv heads (query head h uses KV head h // (H // Hkv)); o like q.\n"
        "Keys used: j < Lk, or j < clamp(kv_len[b] + kv_len_add, 0, Lk) when kv_len (int32\n"
        "(batch,) device) is given; key_mask (uint8 (batch, Lk), 0 = masked) sets a logit to\n"
        "MASK_VALUE (finite). Every query attends to all used keys (no causal mask).\n"
        "scale multiplies q.k. splits > 1 splits the keys over blocks (for few queries) and\n"
        "needs workspace >= attention_workspace_bytes(batch, Lq, H, D, splits).\n"
        "D % 8 == 0, D <= 256; q/k/v 16-byte aligned with strides % 8 == 0.\n"
        "out_scale (float32 device scalar) makes o FP8 e4m3, o = out / *out_scale saturated\n"
        "(the next FP8 GEMM's static input scale); it needs splits >= 2 (the split-K combine\n"
        "writes it). attention_prefix and attention_decoder take it too.");
  m.def("attention_siglip",
        [](ptr_t qkv, ptr_t out, i64 views, i64 tokens, i64 heads, i64 head_dim,
           ptr_t stream) {
          const i64 W = heads * head_dim;
          AttnArgs a = attn_base(qkv, qkv + W * 2, qkv + 2 * W * 2, out, stream);
          a.batch = views; a.Lq = tokens; a.Lk = tokens; a.H = heads; a.Hkv = heads;
          a.D = head_dim; a.q_row = a.k_row = a.v_row = 3 * W; a.o_row = W;
          a.q_batch = a.k_batch = a.v_batch = tokens * 3 * W; a.o_batch = tokens * W;
          a.scale = 1.f / std::sqrt(static_cast<float>(head_dim));
          attention(a);
        },
        py::arg("qkv"), py::arg("out"), py::arg("views"), py::arg("tokens"), py::arg("heads"),
        py::arg("head_dim"), py::arg("stream"),
        "SigLIP bidirectional self-attention per view. qkv: (views*tokens, 3*W) bf16 from\n"
        "one merged projection laid out [q | k | v], W = heads*head_dim; out: (views*tokens,\n"
        "W) bf16. scale = head_dim^-0.5. Views never attend to each other.");
  m.def("attention_prefix",
        [](ptr_t q, ptr_t k_cache, ptr_t v_cache, ptr_t out, i64 L, i64 heads, i64 kv_heads,
           i64 head_dim, ptr_t valid_len, float scale, ptr_t stream, ptr_t key_mask,
           i64 splits, ptr_t ws, size_t ws_bytes, ptr_t out_scale) {
          AttnArgs a = attn_base(q, k_cache, v_cache, out, stream);
          a.out_scale = out_scale;
          a.Lq = L; a.Lk = L; a.H = heads; a.Hkv = kv_heads; a.D = head_dim;
          a.q_row = heads * head_dim; a.o_row = heads * head_dim;
          a.k_row = a.v_row = kv_heads * head_dim;
          a.kv_len = valid_len; a.key_mask = key_mask; a.scale = scale;
          a.splits = splits; a.workspace = ws; a.workspace_bytes = ws_bytes;
          attention(a);
        },
        py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("out"), py::arg("L"),
        py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"), py::arg("valid_len"),
        py::arg("scale"), py::arg("stream"), py::kw_only(), py::arg("key_mask") = 0,
        py::arg("splits") = 1, py::arg("workspace") = 0, py::arg("workspace_bytes") = 0,
        py::arg("out_scale") = 0,
        "Prefix (Gemma) bidirectional GQA attention over valid tokens. q: (L, heads*head_dim)\n"
        "bf16 (post-RoPE, from rope_qkv_split); k_cache, v_cache: (>= L, kv_heads*head_dim)\n"
        "bf16; out: (L, heads*head_dim). Keys j < *valid_len (int32 device scalar, so one\n"
        "graph serves any prompt length) and key_mask[j] != 0 (optional uint8 (L,)). Rows\n"
        "t >= valid_len are computed too (finite, ignored downstream).");
  m.def("attention_decoder",
        [](ptr_t q, ptr_t k_cache, ptr_t v_cache, ptr_t out, i64 n_q, i64 cache_rows,
           i64 heads, i64 kv_heads, i64 head_dim, ptr_t prefix_len, float scale, ptr_t stream,
           ptr_t key_mask, i64 splits, ptr_t ws, size_t ws_bytes, ptr_t out_scale) {
          AttnArgs a = attn_base(q, k_cache, v_cache, out, stream);
          a.out_scale = out_scale;
          a.Lq = n_q; a.Lk = cache_rows; a.H = heads; a.Hkv = kv_heads; a.D = head_dim;
          a.q_row = heads * head_dim; a.o_row = heads * head_dim;
          a.k_row = a.v_row = kv_heads * head_dim;
          a.kv_len = prefix_len; a.kv_len_add = n_q; a.key_mask = key_mask; a.scale = scale;
          a.splits = splits; a.workspace = ws; a.workspace_bytes = ws_bytes;
          attention(a);
        },
        py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("out"), py::arg("n_q"),
        py::arg("cache_rows"), py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"),
        py::arg("prefix_len"), py::arg("scale"), py::arg("stream"), py::kw_only(),
        py::arg("key_mask") = 0, py::arg("splits") = 1, py::arg("workspace") = 0,
        py::arg("workspace_bytes") = 0, py::arg("out_scale") = 0,
        "Action-expert attention: n_q suffix queries (q: (n_q, heads*head_dim) bf16) against\n"
        "the cached prefix K/V plus their own K/V, which rope_qkv_split wrote at cache rows\n"
        "[*prefix_len, *prefix_len + n_q) (cache_offset = prefix_len). Keys: rows\n"
        "j < *prefix_len + n_q of k_cache/v_cache (cache_rows, kv_heads*head_dim); every\n"
        "suffix token sees every valid prefix token and all suffix tokens (Pi0.5).\n"
        "key_mask: optional uint8 (cache_rows,). Use splits (split-K) for few queries.");

  m.def("attention_mqa_gemm_workspace_bytes", &attention_mqa_gemm_workspace_bytes,
        py::arg("rows"), py::arg("keys_pad"),
        "Scratch bytes attention_mqa_gemm needs (S fp32 + P bf16), rows = n_q * heads.");
  m.def("attention_mqa_gemm",
        [](ptr_t q, ptr_t k_cache, ptr_t v_cache, ptr_t out, i64 n_q, i64 cache_rows,
           i64 keys_pad, i64 heads, i64 head_dim, ptr_t n_keys, float scale, ptr_t stream,
           i64 keys_add, ptr_t key_mask, ptr_t ws, size_t ws_bytes, ptr_t gemm_ws,
           size_t gemm_ws_bytes) {
          attention_mqa_gemm(q, k_cache, v_cache, out, n_q, cache_rows, keys_pad, heads,
                             head_dim, n_keys, keys_add, scale, key_mask, ws, ws_bytes, gemm_ws,
                             gemm_ws_bytes, stream);
        },
        py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("out"), py::arg("n_q"),
        py::arg("cache_rows"), py::arg("keys_pad"), py::arg("heads"), py::arg("head_dim"),
        py::arg("n_keys"), py::arg("scale"), py::arg("stream"), py::kw_only(),
        py::arg("keys_add") = 0, py::arg("key_mask") = 0, py::arg("workspace") = 0,
        py::arg("workspace_bytes") = 0, py::arg("gemm_workspace") = 0,
        py::arg("gemm_workspace_bytes") = 0,
        "Attention of n_q tokens x heads query heads over one KV head (MQA) as cuBLASLt\n"
        "GEMMs: S = scale Q K^T (fp32), masked softmax -> P (bf16), out = P V (bf16).\n"
        "q, out: (n_q, heads*head_dim); keys: cache rows j < min(*n_keys + keys_add,\n"
        "cache_rows) (prefix: n_keys = valid_len; decoder: prefix_len with keys_add = n_q)\n"
        "and key_mask[j] != 0 (finite mask constant otherwise), as attention_prefix/_decoder.\n"
        "Reads keys_pad (multiple of 16, >= cache_rows) rows of k_cache/v_cache, which must\n"
        "exist (finite padding). workspace >= attention_mqa_gemm_workspace_bytes(n_q * heads,\n"
        "keys_pad), 256-byte aligned; gemm_workspace: cuBLASLt scratch (optional).");

  // ------------------------------------------------------------------ persistent expert
  m.def("expert_megakernel", &expert_megakernel, py::arg("ptrs"), py::arg("sizes"),
        py::arg("eps"), py::arg("attn_scale"), py::arg("theta"), py::arg("stream"),
        "One denoising step of the Pi0.5 action expert (every layer + the final adaRMS) as one\n"
        "persistent launch (sm_90a; raises ValueError on other GPUs or builds). ptrs: dict of\n"
        "device pointers: the schedule (tasks, task_start, pages, page_start, counters:\n"
        "expert_megakernel_sync_words(counters, blocks) int32 words, zero before the first\n"
        "launch, left reusable by every launch), wpack (packed FP8 weights),\n"
        "wscale (depth*4 weight scales), ascale (scale-table slot of this step's layer-0 qkv\n"
        "site), mod (this step's adaRMS table), x (H, W) bf16 in/out, xn (H, W) bf16 out,\n"
        "act_w / act_attn / act_mlp (FP8 scratch), part (8, tpad, W) fp32 split-K partials,\n"
        "q (H, heads*D),\n"
        "k_cache / v_cache (depth, cache_rows, D), rope (table), positions, valid_len,\n"
        "key_mask, part_o / part_lse (attention partials), optionally trace ((tasks, 6) int64:\n"
        "%globaltimer ns per task, csrc/megakernel/task_table.h kTraceStamps). sizes: blocks,\n"
        "tpad, counters, H, W, F, heads, kv_heads, head_dim, cache_rows, rope_rows, splits,\n"
        "depth, o_splits, down_splits, max_klen, table_bytes (the largest block's task and page\n"
        "rows), counter_words (the counters buffer's length), plain_residual, fold_in / fold_out (1 only in builds with FLASH_RT_MK_FOLD_IO:\n"
        "the action-in projection in layer 0's norm, the action-out projection and the Euler\n"
        "update in the final norm; they need action_dim, steps and the pointers act_x (H, A)\n"
        "fp32, act_x_bf16, act_in_w / act_in_b, act_out_w / act_out_b (bf16)).\n"
        "See flash_rt/models/common/expert_megakernel.py, which builds both.");
  m.def("expert_megakernel_smem_bytes", &expert_megakernel_smem_bytes,
        "Dynamic shared memory per block of expert_megakernel, before the block's tables.");
  m.def("expert_megakernel_sync_words", &expert_megakernel_sync_words, py::arg("counters"),
        py::arg("blocks"),
        "int32 words of the counters buffer a schedule of `counters` counters on `blocks`\n"
        "blocks needs in this build (counters + 1; one a counter and block + 2 with the build\n"
        "switch FLASH_RT_MK_BLOCK_FLAGS=1).");
  m.def("expert_megakernel_folds_io", &expert_megakernel_folds_io,
        "Whether this build can fold the action-in / action-out projections and the Euler "
        "update into expert_megakernel (build switch FLASH_RT_MK_FOLD_IO=1).");

  m.def("set_programmatic_launch", [](bool on) {
    const bool before = programmatic_launch();
    programmatic_launch() = on;
    return before;
  }, py::arg("on"),
        "Launch the module's kernels (all but expert_megakernel, which takes its own `pdl`)\n"
        "with programmatic dependent launch from now on (process-wide; graphs keep what they\n"
        "captured). Returns the previous setting. Every kernel waits for the ones before it\n"
        "before touching memory, so either setting computes the same.");

  m.def("built_archs", [] {
    std::vector<std::string> v;
    std::string s = FLASH_RT_GPU_ARCHS;
    size_t start = 0;
    while (start <= s.size()) {
      size_t e = s.find(',', start);
      if (e == std::string::npos) e = s.size();
      if (e > start) v.push_back(s.substr(start, e - start));
      start = e + 1;
    }
    return v;
  }, "GPU architectures compiled into this module (e.g. ['90a', '110a', '120a']).");
}
