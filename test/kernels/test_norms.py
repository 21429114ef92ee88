"""Row norms fused with FP8 quantisation: LayerNorm, RMSNorm ((1+w) / w / none), adaRMS
from a per-step table, and the fused gated residual + adaRMS."""
from __future__ import annotations

import pytest
import torch

from kutil import FULL, TINY, Guarded, fp8_close, ptr, scalar

EPS = FULL.prefix.rms_norm_eps

# (name, M, N) on real Pi0.5 shapes and tiny ones
ROWS = [
    ("tiny_expert", TINY.horizon, TINY.expert.width),
    ("tiny_prefix", 7, TINY.prefix.width),
    ("siglip", FULL.num_views * FULL.tokens_per_view, FULL.siglip.width),
    ("prefix", FULL.max_prefix_len, FULL.prefix.width),
    ("expert", FULL.horizon, FULL.expert.width),
]
IDS = [r[0] for r in ROWS]


def rms_ref(x, eps):
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


def ada_table(conds, N, step_scale=0.5):
    return (torch.randn(conds, 3 * N, device="cuda") * step_scale).contiguous()


@pytest.mark.parametrize("name,M,N", ROWS, ids=IDS)
def test_layernorm_fp8_and_bf16(fk, stream, name, M, N):
    x = (torch.randn(M, N, device="cuda") * 3 + 1).bfloat16()
    w = torch.randn(N, device="cuda").bfloat16()
    b = torch.randn(N, device="cuda").bfloat16()
    ref = torch.nn.functional.layer_norm(x.float(), (N,), w.float(), b.float(), EPS)
    s = float(ref.abs().max()) / 448
    out = Guarded((M, N), torch.float8_e4m3fn)
    s_dev = scalar(s)  # kept alive: the kernel reads it asynchronously
    fk.layernorm_fp8(ptr(x), ptr(w), ptr(b), ptr(out.t), ptr(s_dev), M, N, EPS, stream)
    out.check()
    fp8_close(out.t, ref, s)
    out16 = Guarded((M, N), torch.bfloat16)
    fk.layernorm_bf16(ptr(x), ptr(w), ptr(b), ptr(out16.t), M, N, EPS, stream)
    out16.check()
    torch.testing.assert_close(out16.t.float(), ref, rtol=8e-3, atol=1e-2)


@pytest.mark.parametrize("name,M,N", ROWS, ids=IDS)
@pytest.mark.parametrize("mode", ["one_plus_w", "w", "folded"])
def test_rmsnorm(fk, stream, name, M, N, mode):
    x = (torch.randn(M, N, device="cuda") * 2).bfloat16()
    w = torch.randn(N, device="cuda").bfloat16()
    g = {"one_plus_w": 1 + w.float(), "w": w.float(), "folded": torch.ones(N, device="cuda")}[mode]
    wp = 0 if mode == "folded" else ptr(w)
    ref = rms_ref(x, EPS) * g
    s = float(ref.abs().max()) / 448
    out = Guarded((M, N), torch.float8_e4m3fn)
    s_dev = scalar(s)  # kept alive: the kernel reads it asynchronously
    fk.rmsnorm_fp8(ptr(x), wp, ptr(out.t), ptr(s_dev), M, N, EPS, mode == "one_plus_w", stream)
    out.check()
    fp8_close(out.t, ref, s)
    out16 = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    fk.rmsnorm_bf16(ptr(x), wp, ptr(out16), M, N, EPS, mode == "one_plus_w", stream)
    torch.testing.assert_close(out16.float(), ref, rtol=8e-3, atol=1e-2)


@pytest.mark.parametrize("name,M,N", ROWS, ids=IDS)
def test_adarms_uses_per_row_condition(fk, stream, name, M, N):
    rows_per_cond = max(1, M // 2)  # two conditions (batch of 2), or M conds when M < 2
    conds = (M + rows_per_cond - 1) // rows_per_cond
    x = torch.randn(M, N, device="cuda").bfloat16()
    mod = ada_table(conds, N)
    idx = torch.arange(M, device="cuda") // rows_per_cond
    sc, sh = mod[idx, :N], mod[idx, N:2 * N]
    ref = rms_ref(x, EPS) * (1 + sc) + sh
    s = float(ref.abs().max()) / 448
    out = Guarded((M, N), torch.float8_e4m3fn)
    s_dev = scalar(s)  # kept alive: the kernel reads it asynchronously
    fk.adarms_fp8(ptr(x), ptr(mod), ptr(out.t), ptr(s_dev), M, N, EPS, rows_per_cond, stream)
    out.check()
    fp8_close(out.t, ref, s)
    out16 = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    fk.adarms_bf16(ptr(x), ptr(mod), ptr(out16), M, N, EPS, rows_per_cond, stream)
    torch.testing.assert_close(out16.float(), ref, rtol=8e-3, atol=1e-2)


def test_adarms_step_table_offset(fk, stream):
    # Precomputed (steps, 3N) table: passing the pointer of step k's row selects step k.
    M, N, steps = FULL.horizon, FULL.expert.width, FULL.num_steps
    x = torch.randn(M, N, device="cuda").bfloat16()
    table = ada_table(steps, N)
    k = 7
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    fk.adarms_bf16(ptr(x), ptr(table[k]), ptr(out), M, N, EPS, M, stream)
    ref = rms_ref(x, EPS) * (1 + table[k, :N]) + table[k, N:2 * N]
    torch.testing.assert_close(out.float(), ref, rtol=8e-3, atol=1e-2)


@pytest.mark.parametrize("M,N", [(TINY.horizon, TINY.expert.width), (FULL.horizon, FULL.expert.width)])
def test_gated_residual_and_fused_adarms_are_identical(fk, stream, M, N):
    x0 = torch.randn(M, N, device="cuda").bfloat16()
    y = torch.randn(M, N, device="cuda").bfloat16()
    gate_mod, norm_mod = ada_table(1, N), ada_table(1, N)
    s = scalar(0.02)
    # unfused: gated_residual then adarms_fp8
    xa = x0.clone()
    fk.gated_residual(ptr(xa), ptr(y), ptr(gate_mod), M, N, M, stream)
    ref_x = (x0.float() + gate_mod[0, 2 * N:] * y.float()).bfloat16()
    assert torch.equal(xa, ref_x), "gated_residual is not bf16(x + gate * y)"
    oa = torch.empty(M, N, device="cuda", dtype=torch.float8_e4m3fn)
    fk.adarms_fp8(ptr(xa), ptr(norm_mod), ptr(oa), ptr(s), M, N, EPS, M, stream)
    # fused
    xb = x0.clone()
    ob = Guarded((M, N), torch.float8_e4m3fn)
    fk.gated_residual_adarms_fp8(ptr(xb), ptr(y), ptr(gate_mod), ptr(norm_mod), ptr(ob.t),
                                 ptr(s), M, N, EPS, M, stream)
    ob.check()
    assert torch.equal(xb, xa)
    assert torch.equal(ob.t.view(torch.uint8), oa.view(torch.uint8))


def test_seq_dim_contract_rows_not_flattened(fk, stream):
    # A (seq, dim) call must normalise each row over dim; a wrapper passing
    # (seq*dim, dim) would write far past the output (caught by the guard).
    seq, dim = 4, 64
    x = torch.randn(seq, dim, device="cuda").bfloat16()
    out = Guarded((seq, dim), torch.bfloat16)
    fk.rmsnorm_bf16(ptr(x), 0, ptr(out.t), seq, dim, EPS, False, stream)
    out.check()
    torch.testing.assert_close(out.t.float(), rms_ref(x, EPS), rtol=8e-3, atol=1e-2)
    per_row_rms = out.t.float().pow(2).mean(-1)
    torch.testing.assert_close(per_row_rms, torch.ones(seq, device="cuda"), rtol=2e-2, atol=0)


def test_norm_rejects_bad_arguments(fk, stream):
    x = torch.randn(4, 64, device="cuda").bfloat16()
    out = torch.empty_like(x)
    with pytest.raises(ValueError, match="multiple of 8"):
        fk.rmsnorm_bf16(ptr(x), 0, ptr(out), 4, 60, EPS, False, stream)
    with pytest.raises(ValueError, match="aligned"):
        fk.rmsnorm_bf16(ptr(x) + 2, 0, ptr(out), 4, 56, EPS, False, stream)
    with pytest.raises(ValueError, match="exceeds"):
        fk.rmsnorm_bf16(ptr(x), 0, ptr(out), 1, 16384, EPS, False, stream)
    with pytest.raises(ValueError, match="add_one"):
        fk.rmsnorm_bf16(ptr(x), 0, ptr(out), 4, 64, EPS, True, stream)
    with pytest.raises(ValueError, match="null"):
        fk.layernorm_fp8(ptr(x), ptr(x), ptr(x), ptr(out), 0, 4, 64, EPS, stream)
