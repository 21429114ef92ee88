"""GeGLU, SiLU, FP8 quantize (static / dynamic), amax, Euler update, text embedding gather."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kutil import (FULL, TINY, Guarded, fp8_close, fp8_ref, gate_up_halves, gate_up_interleaved,
                   ptr, scalar)

GEGLU = [("tiny", 7, TINY.expert.mlp_dim), ("expert", FULL.horizon, FULL.expert.mlp_dim),
         ("prefix", FULL.max_prefix_len, FULL.prefix.mlp_dim)]


@pytest.mark.parametrize("name,M,Fd", GEGLU, ids=[g[0] for g in GEGLU])
def test_geglu(fk, stream, name, M, Fd):
    gu = (torch.randn(M, 2 * Fd, device="cuda") * 2).bfloat16()
    g, u = gate_up_halves(gu)
    ref = F.gelu(g.float(), approximate="tanh") * u.float()
    s = float(ref.abs().max()) / 448
    out = Guarded((M, Fd), torch.float8_e4m3fn)
    s_dev = scalar(s)  # kept alive: the kernel reads it asynchronously
    fk.geglu_fp8(ptr(gu), ptr(out.t), ptr(s_dev), M, Fd, stream)
    out.check()
    fp8_close(out.t, ref, s)
    o16 = Guarded((M, Fd), torch.bfloat16)
    fk.geglu_bf16(ptr(gu), ptr(o16.t), M, Fd, stream)
    o16.check()
    torch.testing.assert_close(o16.t.float(), ref, rtol=8e-3, atol=1e-3)


def test_geglu_reads_the_interleaved_gate_up_layout(fk, stream):
    # u = 1 everywhere, g = x, in the weight spec's interleave: out must be gelu(x) (reading
    # [gate | up] halves, or groups of the wrong size, mixes ones into the gate).
    M, Fd = 3, 32
    g = torch.linspace(-3, 3, M * Fd, device="cuda").view(M, Fd)
    gu = gate_up_interleaved(g, torch.ones_like(g)).bfloat16()
    out = torch.empty(M, Fd, device="cuda", dtype=torch.bfloat16)
    fk.geglu_bf16(ptr(gu), ptr(out), M, Fd, stream)
    torch.testing.assert_close(out.float(), F.gelu(g.bfloat16().float(), approximate="tanh"),
                               rtol=8e-3, atol=1e-3)


# Pi0's action-time MLP: (horizon, expert width) per denoising step
SILU = [("tiny", TINY.horizon * TINY.expert.width), ("full", FULL.horizon * FULL.expert.width)]


@pytest.mark.parametrize("name,n", SILU, ids=[s[0] for s in SILU])
def test_silu_matches_torch_and_runs_in_place(fk, stream, name, n):
    x = (torch.randn(n, device="cuda") * 4).bfloat16()
    x[:8] = torch.tensor([0.0, -0.0, 1e-3, -30.0, 30.0, -88.0, 88.0, 1.0])
    want = F.silu(x.float()).bfloat16()
    out = Guarded((n,), torch.bfloat16)
    fk.silu_bf16(ptr(x), ptr(out.t), n, stream)
    out.check()
    # fp32 expf / division vs torch's: at most one bf16 rounding step apart
    ulp = torch.finfo(torch.bfloat16).eps * want.float().abs().clamp_min(2 ** -126)
    assert bool(((out.t.float() - want.float()).abs() <= ulp).all())
    assert float((out.t != want).float().mean()) < 1e-3
    fk.silu_bf16(ptr(x), ptr(x), n, stream)  # in place
    torch.cuda.synchronize()
    assert torch.equal(x, out.t)
    with pytest.raises(ValueError, match="n"):
        fk.silu_bf16(ptr(x), ptr(out.t), n - 1, stream)


@pytest.mark.parametrize("n", [8, 4096, FULL.max_prefix_len * FULL.prefix.width])
def test_quantize_static_is_bit_exact(fk, stream, n):
    x = (torch.randn(n, device="cuda") * 10).bfloat16()
    x[0] = 1e4  # saturates
    s = 0.0173
    out = Guarded((n,), torch.float8_e4m3fn)
    s_dev = scalar(s)  # kept alive: the kernel reads it asynchronously
    fk.quantize_fp8_static(ptr(x), ptr(out.t), ptr(s_dev), n, stream)
    out.check()
    ref = fp8_ref(x, torch.tensor(s, dtype=torch.float32))
    assert torch.equal(out.t.view(torch.uint8), ref.view(torch.uint8))


def test_quantize_dynamic_scale_and_values(fk, stream):
    n = FULL.horizon * FULL.expert.mlp_dim
    x = (torch.randn(n, device="cuda") * 3).bfloat16()
    out = torch.empty(n, device="cuda", dtype=torch.float8_e4m3fn)
    scale_out, amax_ws = scalar(-1.0), scalar(123.0)  # amax_ws garbage must be reset
    fk.quantize_fp8_dynamic(ptr(x), ptr(out), ptr(scale_out), ptr(amax_ws), n, stream)
    amax = x.float().abs().max()
    s = amax / torch.tensor(448.0, device="cuda")  # IEEE division (not * 1/448)
    assert float(scale_out) == float(s)
    ref = fp8_ref(x, scale_out[0])
    assert torch.equal(out.view(torch.uint8), ref.view(torch.uint8))
    assert float(out.float().abs().max()) == 448.0


def test_amax_update_is_a_running_max(fk, stream):
    amax = scalar(0.0)
    a = torch.randn(1024, device="cuda").bfloat16()
    b = (torch.randn(1024, device="cuda") * 5).bfloat16()
    fk.amax_update(ptr(a), 1024, ptr(amax), stream)
    assert float(amax) == float(a.float().abs().max())
    fk.amax_update(ptr(b), 1024, ptr(amax), stream)
    fk.amax_update(ptr(a), 1024, ptr(amax), stream)
    assert float(amax) == max(float(a.float().abs().max()), float(b.float().abs().max()))


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["tiny", "full"])
def test_euler_step_is_bit_exact(fk, stream, cfg):
    n = cfg.horizon * cfg.action_dim
    x = torch.randn(n, device="cuda")
    v = torch.randn(n, device="cuda").bfloat16()
    dt = -1.0 / cfg.num_steps
    want = x + torch.tensor(dt, dtype=torch.float32) * v.float()
    xb = Guarded((n,), torch.bfloat16)
    fk.euler_step(ptr(x), ptr(v), ptr(xb.t), n, dt, stream)
    xb.check()
    assert torch.equal(x, want)
    assert torch.equal(xb.t, want.bfloat16())
    fk.euler_step(ptr(x), ptr(v), 0, n, dt, stream)  # no bf16 copy
    assert torch.equal(x, want + torch.tensor(dt, dtype=torch.float32) * v.float())


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["tiny", "full"])
def test_embed_gather_is_bit_exact(fk, stream, cfg):
    V, N, M = cfg.prefix.vocab_size, cfg.prefix.width, cfg.max_token_len
    table = torch.randn(V, N, device="cuda").bfloat16()
    ids = torch.randint(0, V, (M,), device="cuda", dtype=torch.int32)
    ids[3] = V + 5  # out of range -> zero row
    ids[4] = -1
    scale = math.sqrt(N)
    out = Guarded((M, N), torch.bfloat16)
    fk.embed_gather(ptr(ids), ptr(table), ptr(out.t), M, N, V, scale, stream)
    out.check()
    safe = ids.clamp(0, V - 1).long()
    want = (table[safe].float() * torch.tensor(scale, dtype=torch.float32)).bfloat16()
    want[3] = 0
    want[4] = 0
    assert torch.equal(out.t, want)


def test_elementwise_rejects_bad_sizes(fk, stream):
    x = torch.randn(64, device="cuda").bfloat16()
    out = torch.empty(64, device="cuda", dtype=torch.float8_e4m3fn)
    s = scalar(1.0)
    with pytest.raises(ValueError, match="multiple of 8"):
        fk.quantize_fp8_static(ptr(x), ptr(out), ptr(s), 60, stream)
    with pytest.raises(ValueError, match="aligned"):
        fk.quantize_fp8_static(ptr(x) + 2, ptr(out), ptr(s), 56, stream)
    with pytest.raises(ValueError, match="different"):
        fk.quantize_fp8_dynamic(ptr(x), ptr(out), ptr(s), ptr(s), 64, stream)
    with pytest.raises(ValueError, match="must be > 0"):
        fk.geglu_bf16(ptr(x), ptr(x), 0, 8, stream)
