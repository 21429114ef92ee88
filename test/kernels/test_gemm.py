"""cuBLASLt GEMM runner: FP8 vs the dequantised fp32 matmul, bf16 vs fp32, epilogues,
residual, autotune, contracts (bias broadcast, guards, bad arguments)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flash_rt.kernels import gemm_shapes
from kutil import FULL, TINY, Guarded, fp8_ref, ptr, scalar

WS_BYTES = 32 << 20


def make_fp8(M, N, K):
    a = torch.randn(M, K, device="cuda")
    b = torch.randn(N, K, device="cuda") / math.sqrt(K)
    sa, sb = float(a.abs().max()) / 448, float(b.abs().max()) / 448
    aq, bq = fp8_ref(a, sa), fp8_ref(b, sb)
    ref = (aq.float() * sa) @ (bq.float() * sb).t()
    return aq, bq, scalar(sa), scalar(sb), ref


def assert_gemm_close(out, ref):
    tol = 2.0 ** -7 * ref.abs() + 2e-3 * float(ref.abs().max()) + 1e-6
    err = (out.float() - ref).abs()
    assert bool((err <= tol).all()), f"max err {float(err.max()):.4g} (ref max {float(ref.abs().max()):.4g})"


def gemm_shape_ids(shapes):
    return [f"{n}-M{m}-N{nn}-K{k}" for n, m, nn, k in shapes]


# M = 1: Pi0's state token runs the expert's Linears alone (once per inference)
STATE_TOKEN = [("state_qkv_M1", 1, FULL.expert.q_dim + 2 * FULL.expert.kv_dim, FULL.expert.width),
               ("state_down_M1", 1, FULL.expert.width, FULL.expert.mlp_dim)]
REAL = gemm_shapes(FULL) + [("decoder_M10", 10, FULL.expert.width, FULL.expert.mlp_dim)] + \
    STATE_TOKEN
SMALL = [s for s in gemm_shapes(TINY) if s[3] % 16 == 0 and s[2] % 8 == 0]


@pytest.mark.parametrize("shape", SMALL + REAL, ids=gemm_shape_ids(SMALL + REAL))
def test_fp8_gemm_matches_dequantised_matmul(fk, stream, shape):
    _, M, N, K = shape
    aq, bq, sa, sb, ref = make_fp8(M, N, K)
    out = Guarded((M, N), torch.bfloat16)
    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out.t), M, N, K, ptr(sa), ptr(sb), stream)
    out.check()
    assert_gemm_close(out.t, ref)


BF16_SHAPES = SMALL + REAL[:6] + [("state_proj_M1", 1, FULL.expert.width, FULL.action_dim)]


@pytest.mark.parametrize("shape", BF16_SHAPES, ids=gemm_shape_ids(BF16_SHAPES))
def test_bf16_gemm_matches_fp32_matmul(fk, stream, shape):
    _, M, N, K = shape
    a = torch.randn(M, K, device="cuda").bfloat16()
    b = (torch.randn(N, K, device="cuda") / math.sqrt(K)).bfloat16()
    out = Guarded((M, N), torch.bfloat16)
    fk.gemm_bf16(ptr(a), ptr(b), ptr(out.t), M, N, K, stream)
    out.check()
    assert_gemm_close(out.t, a.float() @ b.float().t())


@pytest.mark.parametrize("out_dtype", ["BF16", "FP16"])
def test_fp8_epilogues_bias_gelu_residual(fk, stream, out_dtype):
    M, N, K = 70, 96, 64  # M not a multiple of any tile size
    tdt = torch.bfloat16 if out_dtype == "BF16" else torch.float16
    od = getattr(fk.OutDtype, out_dtype)
    aq, bq, sa, sb, ref = make_fp8(M, N, K)
    bias = torch.randn(N, device="cuda").to(tdt)
    resid = torch.randn(M, N, device="cuda").to(tdt)

    out = torch.empty(M, N, device="cuda", dtype=tdt)
    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                bias=ptr(bias), epilogue=fk.Epilogue.BIAS, out_dtype=od)
    assert_gemm_close(out, ref + bias.float())

    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                bias=ptr(bias), epilogue=fk.Epilogue.BIAS_GELU, out_dtype=od)
    assert_gemm_close(out, F.gelu(ref + bias.float(), approximate="tanh"))

    # residual add in place: D = A B^T + bias + D
    d = resid.clone()
    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(d), M, N, K, ptr(sa), ptr(sb), stream,
                bias=ptr(bias), c=ptr(d), epilogue=fk.Epilogue.BIAS, out_dtype=od)
    assert_gemm_close(d, ref + bias.float() + resid.float())


def test_bias_is_broadcast_over_rows_not_flattened(fk, stream):
    # A zero A makes D == bias: every row must equal the (N,) bias exactly.
    M, N, K = 5, 48, 32
    aq = torch.zeros(M, K, device="cuda").to(torch.float8_e4m3fn)
    bq = torch.ones(N, K, device="cuda").to(torch.float8_e4m3fn)
    bias = torch.arange(N, device="cuda", dtype=torch.float32).bfloat16()
    out = Guarded((M, N), torch.bfloat16)
    one = scalar(1.0)
    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out.t), M, N, K, ptr(one), ptr(one), stream,
                bias=ptr(bias), epilogue=fk.Epilogue.BIAS)
    out.check()
    assert torch.equal(out.t, bias.expand(M, N))


def test_gelu_epilogue_is_the_tanh_approximation(fk, stream):
    # Pre-activations placed exactly: A holds e4m3-representable x in [-3, -1.5] in
    # column 0, B is an identity column, scales 1. There the outputs are <= 0.1 (fp16
    # step <= 6e-5) while tanh- and erf-GELU differ by ~3e-4 on average.
    M, N, K = 64, 8, 16
    x = torch.linspace(-3, -1.5, M, device="cuda").to(torch.float8_e4m3fn)
    a = torch.zeros(M, K, device="cuda").to(torch.float8_e4m3fn)
    a[:, 0] = x
    b = torch.zeros(N, K, device="cuda")
    b[:, 0] = 1
    b = b.to(torch.float8_e4m3fn)
    one = scalar(1.0)
    bias = torch.zeros(N, device="cuda", dtype=torch.float16)
    out = torch.empty(M, N, device="cuda", dtype=torch.float16)
    fk.gemm_fp8(ptr(a), ptr(b), ptr(out), M, N, K, ptr(one), ptr(one), stream, bias=ptr(bias),
                epilogue=fk.Epilogue.BIAS_GELU, out_dtype=fk.OutDtype.FP16)
    xv = x.float()
    e_tanh = float((out[:, 0].float() - F.gelu(xv, approximate="tanh")).abs().mean())
    e_erf = float((out[:, 0].float() - F.gelu(xv)).abs().mean())
    assert e_tanh < 0.3 * e_erf, f"GELU epilogue: mean err vs tanh {e_tanh:.3g}, vs erf {e_erf:.3g}"


def test_bf16_gemm_rejects_fp16_output(fk, stream):
    t = torch.empty(64, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bf16 GEMM writes bf16"):
        fk.gemm_bf16(ptr(t), ptr(t), ptr(t), 8, 8, 8, stream, out_dtype=fk.OutDtype.FP16)


def test_fp8_output_is_rejected_until_validated(fk, stream):
    # cuBLASLt's FP8-output path ran on the H100 (2026-11-27) but one of 8192 outputs of the
    # BIAS case fell more than one e4m3 step from the reference: disabled, see docs/kernels.md.
    M, N, K = 64, 128, 64
    aq, bq, sa, sb, _ = make_fp8(M, N, K)
    out = torch.empty(M, N, device="cuda", dtype=torch.float8_e4m3fn)
    inv = scalar(1.0)
    with pytest.raises(ValueError, match="FP8 is disabled"):
        fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                    out_dtype=fk.OutDtype.FP8, d_scale_inv=ptr(inv))


def test_autotune_keeps_the_fastest_and_results_stay_correct(fk, stream):
    name, M, N, K = REAL[7]  # prefix gate_up
    aq, bq, sa, sb, ref = make_fp8(M, N, K)
    ws = torch.empty(WS_BYTES, dtype=torch.uint8, device="cuda")
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    r = fk.gemm_fp8_autotune(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                             workspace=ptr(ws), workspace_bytes=WS_BYTES, iters=5)
    assert r["candidates"] >= 1
    assert r["best_us"] <= r["heuristic_us"] + 1e-3  # chosen = min over measured, incl. #0
    out.zero_()
    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                workspace=ptr(ws), workspace_bytes=WS_BYTES)
    assert_gemm_close(out, ref)


def test_autotune_over_a_weight_cycle(fk, stream):
    # b_cycle (the other layers' weights of the expert's gate/up shape): candidates are timed
    # with the weights streaming from HBM; the tuned plan still computes this call's GEMM
    M, N, K = 50, 2 * FULL.expert.mlp_dim, FULL.expert.width
    aq, bq, sa, sb, ref = make_fp8(M, N, K)
    others = [torch.empty(N, K, device="cuda", dtype=torch.float8_e4m3fn) for _ in range(8)]
    ws = torch.empty(WS_BYTES, dtype=torch.uint8, device="cuda")
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    r = fk.gemm_fp8_autotune(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                             workspace=ptr(ws), workspace_bytes=WS_BYTES, iters=2,
                             b_cycle=[ptr(o) for o in others])
    assert r["candidates"] >= 1 and r["best_us"] <= r["heuristic_us"] + 1e-3
    out.zero_()
    fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                workspace=ptr(ws), workspace_bytes=WS_BYTES)
    assert_gemm_close(out, ref)
    with pytest.raises(ValueError, match="iters must be >= 1"):  # not raised by the cycle
        fk.gemm_fp8_autotune(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                             workspace=ptr(ws), workspace_bytes=WS_BYTES, iters=0,
                             b_cycle=[ptr(o) for o in others])
    with pytest.raises(ValueError, match="b_cycle entry"):
        fk.gemm_fp8_autotune(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                             workspace=ptr(ws), workspace_bytes=WS_BYTES,
                             b_cycle=[ptr(others[0]) + 8])


def test_autotune_refuses_capture(fk):
    M, N, K = 16, 16, 16
    aq, bq, sa, sb, _ = make_fp8(M, N, K)
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    s = torch.cuda.Stream()
    g = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match="capture"):
        with torch.cuda.graph(g, stream=s):
            fk.gemm_fp8_autotune(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb),
                                 s.cuda_stream)


def test_bad_arguments_raise_clear_errors(fk, stream):
    M, N, K = 32, 32, 32
    aq, bq, sa, sb, _ = make_fp8(M, N, K)
    out = torch.empty(M + 1, N, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 16"):
        fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, 24, ptr(sa), ptr(sb), stream)
    with pytest.raises(ValueError, match="aligned"):
        fk.gemm_fp8(ptr(aq) + 8, ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream)
    with pytest.raises(ValueError, match="bias"):
        fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                    epilogue=fk.Epilogue.BIAS)
    with pytest.raises(ValueError, match="null"):
        fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, 0, ptr(sb), stream)
    with pytest.raises(ValueError, match="d_scale_inv"):
        fk.gemm_fp8(ptr(aq), ptr(bq), ptr(out), M, N, K, ptr(sa), ptr(sb), stream,
                    d_scale_inv=ptr(sa))
    with pytest.raises(ValueError, match="M must be > 0"):
        fk.gemm_bf16(ptr(out), ptr(out), ptr(out), 0, N, K, stream)
    assert fk.gemm_cache_size() >= 1
