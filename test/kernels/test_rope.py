"""RoPE + QKV split + KV-cache write at a device-side offset."""
from __future__ import annotations

import pytest
import torch

from kutil import FULL, TINY, Guarded, ptr

THETA = FULL.rope_theta


def rope_ref(x, pos, theta):
    """x (M, heads, D) fp32; rotate-half with radians = pos / theta^((2/D) i)."""
    D = x.shape[-1]
    half = D // 2
    ts = theta ** ((2.0 / D) * torch.arange(half, dtype=torch.float32, device=x.device))
    rad = pos.float()[:, None] / ts[None, :]
    sin, cos = rad.sin()[:, None, :], rad.cos()[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


CASES = [  # (name, cfg, M, offset, cache_rows)
    ("tiny_prefix", TINY, 37, 0, TINY.max_prefix_len + TINY.horizon),
    ("tiny_suffix", TINY, TINY.horizon, 600, TINY.max_prefix_len + TINY.horizon),
    ("full_prefix", FULL, FULL.max_prefix_len, 0, FULL.max_prefix_len + FULL.horizon),
    ("full_suffix", FULL, FULL.horizon, 811, FULL.max_prefix_len + FULL.horizon),
]


def rope_inputs(cfg, M, offset):
    """Head layout, a random merged QKV of M tokens at positions offset.., the offset scalar."""
    H, Hkv, D = cfg.prefix.num_heads, cfg.prefix.num_kv_heads, cfg.prefix.head_dim
    qkv = torch.randn(M, (H + 2 * Hkv) * D, device="cuda").bfloat16()
    pos = (torch.arange(M, device="cuda", dtype=torch.int32) + offset).contiguous()
    off = torch.tensor([offset], dtype=torch.int32, device="cuda")
    return H, Hkv, D, qkv, pos, off


@pytest.mark.parametrize("name,cfg,M,offset,cache_rows", CASES, ids=[c[0] for c in CASES])
def test_rope_split_and_cache_write(fk, stream, name, cfg, M, offset, cache_rows):
    H, Hkv, D, qkv, pos, off = rope_inputs(cfg, M, offset)
    q_scale = D ** -0.5
    q_out = Guarded((M, H * D), torch.bfloat16)
    kc = Guarded((cache_rows, Hkv * D), torch.bfloat16, fill=torch.full((cache_rows, Hkv * D), 7.0))
    vc = Guarded((cache_rows, Hkv * D), torch.bfloat16, fill=torch.full((cache_rows, Hkv * D), 7.0))
    fk.rope_qkv_split(ptr(qkv), ptr(pos), ptr(q_out.t), ptr(kc.t), ptr(vc.t), ptr(off), M, H,
                      Hkv, D, cache_rows, THETA, q_scale, stream)
    for g in (q_out, kc, vc):
        g.check()
    x = qkv.float().view(M, H + 2 * Hkv, D)
    q_ref = rope_ref(x[:, :H], pos, THETA) * q_scale
    k_ref = rope_ref(x[:, H:H + Hkv], pos, THETA)
    torch.testing.assert_close(q_out.t.float().view(M, H, D), q_ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(kc.t[offset:offset + M].float().view(M, Hkv, D), k_ref,
                               rtol=1e-2, atol=1e-2)
    assert torch.equal(vc.t[offset:offset + M], qkv[:, (H + Hkv) * D:])
    # rows outside [offset, offset + M) untouched
    untouched = torch.ones(cache_rows, dtype=torch.bool, device="cuda")
    untouched[offset:offset + M] = False
    assert bool((kc.t[untouched] == 7).all()) and bool((vc.t[untouched] == 7).all())


def test_rope_position_zero_is_identity_and_rows_past_cache_are_dropped(fk, stream):
    cfg = TINY
    H, Hkv, D = cfg.prefix.num_heads, cfg.prefix.num_kv_heads, cfg.prefix.head_dim
    M, cache_rows = 8, 12
    qkv = torch.randn(M, (H + 2 * Hkv) * D, device="cuda").bfloat16()
    pos = torch.zeros(M, dtype=torch.int32, device="cuda")
    off = torch.tensor([8], dtype=torch.int32, device="cuda")  # rows 8..15: 12..15 dropped
    q_out = torch.empty(M, H * D, device="cuda", dtype=torch.bfloat16)
    kc = Guarded((cache_rows, Hkv * D), torch.bfloat16, fill=torch.zeros(cache_rows, Hkv * D))
    vc = Guarded((cache_rows, Hkv * D), torch.bfloat16, fill=torch.zeros(cache_rows, Hkv * D))
    fk.rope_qkv_split(ptr(qkv), ptr(pos), ptr(q_out), ptr(kc.t), ptr(vc.t), ptr(off), M, H, Hkv,
                      D, cache_rows, THETA, 1.0, stream)
    kc.check()
    vc.check()
    assert torch.equal(q_out, qkv[:, :H * D])  # angle 0: exact copy
    assert torch.equal(kc.t[8:12], qkv[:4, H * D:(H + Hkv) * D])


def test_rope_rejects_bad_head_dim(fk, stream):
    t = torch.empty(64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="multiple of 16"):
        fk.rope_qkv_split(ptr(t), ptr(t), ptr(t), ptr(t), ptr(t), 0, 1, 1, 1, 12, 4, THETA, 1.0, stream)
    with pytest.raises(ValueError, match="query heads per KV head"):
        fk.rope_qkv_split(ptr(t), ptr(t), ptr(t), ptr(t), ptr(t), 0, 1, 3, 2, 16, 4, THETA, 1.0, stream)


@pytest.mark.parametrize("name,cfg,M,offset,cache_rows", CASES, ids=[c[0] for c in CASES])
def test_rope_table_gives_the_same_bits(fk, stream, name, cfg, M, offset, cache_rows):
    # rope_table's (cos, sin) are the kernel's own fp32 math, so the table path must match
    # the on-the-fly path bit for bit; positions past table_rows fall back to that math
    H, Hkv, D, qkv, pos, off = rope_inputs(cfg, M, offset)
    rows = offset + M // 2  # the last half of the tokens lie past the table
    table = Guarded((rows, D // 2, 2), torch.float32)
    fk.rope_table(ptr(table.t), rows, D, THETA, stream)
    table.check()
    outs = []
    for kw in ({}, {"table": ptr(table.t), "table_rows": rows}):
        q_out = torch.empty(M, H * D, device="cuda", dtype=torch.bfloat16)
        kc = torch.zeros(cache_rows, Hkv * D, device="cuda", dtype=torch.bfloat16)
        vc = torch.zeros_like(kc)
        fk.rope_qkv_split(ptr(qkv), ptr(pos), ptr(q_out), ptr(kc), ptr(vc), ptr(off), M, H, Hkv,
                          D, cache_rows, THETA, D ** -0.5, stream, **kw)
        outs.append((q_out, kc, vc))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    # and the table itself is the reference's angles (to fp32 rounding of pos / timescale)
    ts = THETA ** ((2.0 / D) * torch.arange(D // 2, dtype=torch.float64, device="cuda"))
    rad = torch.arange(rows, dtype=torch.float64, device="cuda")[:, None] / ts
    torch.testing.assert_close(table.t[..., 0].double(), rad.cos(), atol=2e-4, rtol=0)
    torch.testing.assert_close(table.t[..., 1].double(), rad.sin(), atol=2e-4, rtol=0)


def test_rope_table_rejects_bad_arguments(fk, stream):
    t = torch.empty(64, device="cuda", dtype=torch.float32)
    with pytest.raises(ValueError, match="aligned"):
        fk.rope_table(ptr(t) + 8, 2, 16, THETA, stream)
    with pytest.raises(ValueError, match="multiple of 16"):
        fk.rope_table(ptr(t), 2, 12, THETA, stream)
    b = torch.empty(64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="table_rows"):
        fk.rope_qkv_split(ptr(b), ptr(b), ptr(b), ptr(b), ptr(b), 0, 1, 1, 1, 16, 4, THETA, 1.0,
                          stream, table_rows=3)
