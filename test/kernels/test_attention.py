"""Attention kernels vs an fp32 torch reference (and SDPA): SigLIP per view, prefix GQA
with a device-side valid length and key mask, decoder against the KV cache with split-K,
finite-mask semantics, contracts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kutil import FULL, TINY, Guarded, ptr

MASK = -2.3819763e38


def attn_ref(q, k, v, scale, kv_len=None, key_mask=None):
    """q (Lq, H, D), k/v (Lk, Hkv, D) fp32 -> (Lq, H, D); keys j < kv_len, masked keys get
    the finite constant (the reference model's semantics)."""
    kv_len = k.shape[0] if kv_len is None else kv_len
    H, Hkv = q.shape[1], k.shape[1]
    k = k[:kv_len].float().repeat_interleave(H // Hkv, 1)
    v = v[:kv_len].float().repeat_interleave(H // Hkv, 1)
    logits = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    if key_mask is not None:
        logits = torch.where(key_mask[:kv_len].bool()[None, None, :], logits,
                             torch.tensor(MASK, device=q.device))
    p = torch.softmax(logits, -1)
    return torch.einsum("hqk,khd->qhd", p, v)


def close(out, ref):
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["tiny", "full"])
def test_siglip_per_view_matches_sdpa(fk, stream, cfg):
    sc = cfg.siglip
    V, T, H, D = cfg.num_views, cfg.tokens_per_view, sc.num_heads, sc.head_dim
    W = H * D
    qkv = torch.randn(V * T, 3 * W, device="cuda").bfloat16()
    out = Guarded((V * T, W), torch.bfloat16)
    fk.attention_siglip(ptr(qkv), ptr(out.t), V, T, H, D, stream)
    out.check()
    x = qkv.float().view(V, T, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, V, H, T, D)
    ref = F.scaled_dot_product_attention(x[0], x[1], x[2])  # fp32, per view
    close(out.t.view(V, T, H, D), ref.permute(0, 2, 1, 3))


def prefix_case(cfg, L, valid):
    p = cfg.prefix
    H, Hkv, D = p.num_heads, p.num_kv_heads, p.head_dim
    q = torch.randn(L, H * D, device="cuda").bfloat16()
    k = torch.randn(L + cfg.horizon, Hkv * D, device="cuda").bfloat16()
    v = torch.randn(L + cfg.horizon, Hkv * D, device="cuda").bfloat16()
    vl = torch.tensor([valid], dtype=torch.int32, device="cuda")
    return H, Hkv, D, q, k, v, vl


def cached_case(fk, n_q, rows, H, Hkv, D, length, splits):
    """Random q (n_q, H D), K/V caches (rows, Hkv D), a device length scalar and the split-K
    workspace for `splits`."""
    q = torch.randn(n_q, H * D, device="cuda").bfloat16()
    k = torch.randn(rows, Hkv * D, device="cuda").bfloat16()
    v = torch.randn(rows, Hkv * D, device="cuda").bfloat16()
    n = torch.tensor([length], dtype=torch.int32, device="cuda")
    ws_bytes = fk.attention_workspace_bytes(1, n_q, H, D, splits)
    ws = torch.empty(max(ws_bytes, 16), dtype=torch.uint8, device="cuda")
    return q, k, v, n, ws, ws_bytes


@pytest.mark.parametrize("cfg", [TINY, FULL], ids=["tiny", "full"])
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_prefix_gqa_valid_len_and_key_mask(fk, stream, cfg, splits, masked):
    L = cfg.max_prefix_len
    valid = L - 77
    H, Hkv, D, q, k, v, vl = prefix_case(cfg, L, valid)
    km = None
    if masked:
        km = (torch.rand(L, device="cuda") > 0.3).to(torch.uint8)
        km[: cfg.tokens_per_view] = 0  # a whole masked camera view
    ws_bytes = fk.attention_workspace_bytes(1, L, H, D, splits)
    ws = torch.empty(max(ws_bytes, 16), dtype=torch.uint8, device="cuda")
    out = Guarded((L, H * D), torch.bfloat16)
    scale = D ** -0.5
    fk.attention_prefix(ptr(q), ptr(k), ptr(v), ptr(out.t), L, H, Hkv, D, ptr(vl), scale, stream,
                        key_mask=ptr(km) if masked else 0, splits=splits, workspace=ptr(ws),
                        workspace_bytes=ws_bytes)
    out.check()
    ref = attn_ref(q.view(L, H, D), k.view(-1, Hkv, D), v.view(-1, Hkv, D), scale, valid, km)
    close(out.t.view(L, H, D), ref)


# horizon 1: Pi0's state token (keys = the prefix and itself)
@pytest.mark.parametrize("cfg,horizon", [(TINY, TINY.horizon), (FULL, FULL.horizon), (FULL, 10),
                                         (FULL, 1)],
                         ids=["tiny", "full_h50", "full_h10", "full_state_token"])
@pytest.mark.parametrize("splits", [1, 8, 12, 24])
def test_decoder_sees_prefix_and_own_suffix(fk, stream, cfg, horizon, splits):
    L = cfg.max_prefix_len
    prefix_len = L - 123
    p = cfg.expert
    H, Hkv, D = p.num_heads, p.num_kv_heads, p.head_dim
    rows = L + horizon
    q, k, v, pl, ws, ws_bytes = cached_case(fk, horizon, rows, H, Hkv, D, prefix_len, splits)
    out = Guarded((horizon, H * D), torch.bfloat16)
    scale = D ** -0.5
    fk.attention_decoder(ptr(q), ptr(k), ptr(v), ptr(out.t), horizon, rows, H, Hkv, D, ptr(pl),
                         scale, stream, splits=splits, workspace=ptr(ws), workspace_bytes=ws_bytes)
    out.check()
    ref = attn_ref(q.view(horizon, H, D), k.view(rows, Hkv, D), v.view(rows, Hkv, D), scale,
                   prefix_len + horizon)
    close(out.t.view(horizon, H, D), ref)


def test_fully_masked_keys_give_uniform_average_not_nan(fk, stream):
    # where(mask, logits, -2.38e38) with every key masked -> softmax is uniform over the
    # keys in range (finite), unlike -inf which gives NaN.
    L, H, D = 40, 2, 16
    q = torch.randn(L, H * D, device="cuda").bfloat16()
    k = torch.randn(L, D, device="cuda").bfloat16()
    v = torch.randn(L, D, device="cuda").bfloat16()
    km = torch.zeros(L, dtype=torch.uint8, device="cuda")
    vl = torch.tensor([30], dtype=torch.int32, device="cuda")
    out = torch.empty(L, H * D, device="cuda", dtype=torch.bfloat16)
    fk.attention_prefix(ptr(q), ptr(k), ptr(v), ptr(out), L, H, 1, D, ptr(vl), 1.0, stream,
                        key_mask=ptr(km))
    assert bool(torch.isfinite(out.float()).all())
    want = v[:30].float().mean(0)
    close(out.view(L, H, D), want.expand(L, H, D))


def test_zero_valid_keys_give_zeros(fk, stream):
    L, H, D = 16, 2, 16
    q = torch.randn(L, H * D, device="cuda").bfloat16()
    kv = torch.randn(L, D, device="cuda").bfloat16()
    vl = torch.tensor([0], dtype=torch.int32, device="cuda")
    out = torch.full((L, H * D), 5.0, device="cuda", dtype=torch.bfloat16)
    fk.attention_prefix(ptr(q), ptr(kv), ptr(kv), ptr(out), L, H, 1, D, ptr(vl), 1.0, stream)
    assert bool((out == 0).all())


def test_generic_batched_strided_gqa(fk, stream):
    # batch 2, GQA 4:2, q/k/v as column slices of one buffer (row strides > H*D), per-batch
    # kv_len with kv_len_add, head_dim 72 (padded internally to 80).
    B, Lq, Lk, H, Hkv, D = 2, 33, 70, 4, 2, 72
    buf = torch.randn(B, Lk, (H + 2 * Hkv) * D + 8, device="cuda").bfloat16()
    row = buf.shape[-1]
    qoff, koff, voff = 0, H * D, (H + Hkv) * D
    kvl = torch.tensor([50, 61], dtype=torch.int32, device="cuda")
    out = torch.zeros(B, Lq, H * D, device="cuda", dtype=torch.bfloat16)
    base = ptr(buf)
    fk.attention(base + 2 * qoff, base + 2 * koff, base + 2 * voff, ptr(out), B, Lq, Lk, H, Hkv, D,
                 row, row, row, H * D, 0.1, stream, q_batch=Lk * row, k_batch=Lk * row,
                 v_batch=Lk * row, o_batch=Lq * H * D, kv_len=ptr(kvl), kv_len_add=3)
    for b in range(B):
        x = buf[b].float()
        ref = attn_ref(x[:Lq, :H * D].view(Lq, H, D), x[:, koff:koff + Hkv * D].view(Lk, Hkv, D),
                       x[:, voff:voff + Hkv * D].view(Lk, Hkv, D), 0.1, int(kvl[b]) + 3)
        close(out[b].view(Lq, H, D), ref)


def test_attention_rejects_bad_arguments(fk, stream):
    t = torch.empty(4096, device="cuda", dtype=torch.bfloat16)
    vl = torch.tensor([4], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="multiple of 8"):
        fk.attention_prefix(ptr(t), ptr(t), ptr(t), ptr(t), 4, 2, 1, 12, ptr(vl), 1.0, stream)
    with pytest.raises(ValueError, match="aligned"):
        fk.attention_prefix(ptr(t) + 2, ptr(t), ptr(t), ptr(t), 4, 2, 1, 16, ptr(vl), 1.0, stream)
    with pytest.raises(ValueError, match="workspace"):
        fk.attention_prefix(ptr(t), ptr(t), ptr(t), ptr(t), 4, 2, 1, 16, ptr(vl), 1.0, stream,
                            splits=2)
    with pytest.raises(ValueError, match="<= 256"):
        fk.attention_prefix(ptr(t), ptr(t), ptr(t), ptr(t), 1, 1, 1, 264, ptr(vl), 1.0, stream)


@pytest.mark.parametrize("impl", ["v2", "legacy", "v2_qreg", "v2_wg1", "v2_bn32"])
@pytest.mark.parametrize("D", [16, 72, 256])
def test_kernel_variants_on_ragged_lengths(fk, stream, monkeypatch, impl, D):
    # FLASH_RT_ATTN_KERNEL (development knob, read per call) picks the kernel variant; all
    # must agree with the reference. Lengths that end inside a tile and inside a warp
    # group's key slice (v2 splits each 64-key tile over 2 warp groups), a lone key, and
    # split-K with more splits than tiles (empty splits), masked and not.
    monkeypatch.setenv("FLASH_RT_ATTN_KERNEL", impl)
    H, Hkv, Lq, Lk = 8, 1, 11, 150
    q = torch.randn(Lq, H * D, device="cuda").bfloat16()
    k = torch.randn(Lk, Hkv * D, device="cuda").bfloat16()
    v = torch.randn(Lk, Hkv * D, device="cuda").bfloat16()
    km = (torch.rand(Lk, device="cuda") > 0.4).to(torch.uint8)
    for valid in (1, 20, 33, 100, 150):
        for splits in (1, 5, 8, 20):
            for masked in (False, True):
                ws_bytes = fk.attention_workspace_bytes(1, Lq, H, D, splits)
                ws = torch.empty(max(ws_bytes, 16), dtype=torch.uint8, device="cuda")
                vl = torch.tensor([valid], dtype=torch.int32, device="cuda")
                out = torch.full((Lq, H * D), 7.0, device="cuda", dtype=torch.bfloat16)
                fk.attention(ptr(q), ptr(k), ptr(v), ptr(out), 1, Lq, Lk, H, Hkv, D, H * D,
                             Hkv * D, Hkv * D, H * D, D ** -0.5, stream, kv_len=ptr(vl),
                             key_mask=ptr(km) if masked else 0, splits=splits,
                             workspace=ptr(ws), workspace_bytes=ws_bytes)
                mk = km if masked else None
                if masked and not bool(km[:valid].any()):
                    continue  # all keys masked: covered by the uniform-average test
                ref = attn_ref(q.view(Lq, H, D), k.view(Lk, Hkv, D), v.view(Lk, Hkv, D),
                               D ** -0.5, valid, mk)
                close(out.view(Lq, H, D), ref)


def dequantised_close(out8, scale, ref):
    """FP8 output (dequantised with its scale) vs the fp32 reference: e4m3 keeps 3 mantissa
    bits (<= 1/16 relative rounding) on top of the bf16 kernel's own error."""
    torch.testing.assert_close(out8.float() * scale, ref, rtol=0.08, atol=0.03)


@pytest.mark.parametrize("site,splits", [("prefix", 3), ("decoder", 12), ("decoder", 16),
                                         ("state_token", 8)])
def test_fp8_output_with_static_scale(fk, stream, site, splits):
    # out_scale makes the split-K combine write FP8 (out / scale) for the next GEMM: the same
    # values as the bf16 output quantised, and nothing written outside the output. The
    # state token (Pi0) is the decoder kernel with one query row.
    cfg = FULL
    p = cfg.prefix
    H, Hkv, D = p.num_heads, p.num_kv_heads, p.head_dim
    n_q = {"prefix": cfg.max_prefix_len, "decoder": cfg.horizon, "state_token": 1}[site]
    L = cfg.max_prefix_len
    rows = L + cfg.horizon
    valid = L - 50
    q, k, v, vl, ws, ws_bytes = cached_case(fk, n_q, rows, H, Hkv, D, valid, splits)
    keys = valid if site == "prefix" else valid + n_q
    ref = attn_ref(q.view(n_q, H, D), k.view(rows, Hkv, D), v.view(rows, Hkv, D), D ** -0.5,
                   keys).reshape(n_q, -1)
    shape = (n_q, H * D)
    fn = fk.attention_prefix if site == "prefix" else fk.attention_decoder
    extra = () if site == "prefix" else (rows,)

    def call(out, **kw):
        fn(ptr(q), ptr(k), ptr(v), out, n_q, *extra, H, Hkv, D, ptr(vl), D ** -0.5, stream,
           workspace=ptr(ws), workspace_bytes=ws_bytes, **kw)
    scale = torch.tensor([float(ref.abs().max()) / 448.0], device="cuda")
    out8 = Guarded(shape, torch.float8_e4m3fn)
    call(ptr(out8.t), out_scale=ptr(scale), splits=splits)
    out8.check()
    dequantised_close(out8.t, scale, ref)
    out16 = torch.empty(shape, device="cuda", dtype=torch.bfloat16)
    call(ptr(out16), splits=splits)
    torch.cuda.synchronize()
    # one e4m3 step at most between quantising the fp32 result and its bf16 rounding
    step = (out16.float().abs() / 8).clamp_min(float(scale) * 2 ** -6)
    assert bool(((out8.t.float() * scale - out16.float()).abs() <= step + 1e-6).all())
    with pytest.raises(ValueError, match="splits >= 2"):
        call(ptr(out8.t), out_scale=ptr(scale), splits=1)


@pytest.mark.parametrize("cfg,horizon,site", [
    (TINY, TINY.horizon, "decoder"), (FULL, FULL.horizon, "decoder"), (FULL, 10, "decoder"),
    (FULL, 1, "decoder"), (TINY, TINY.horizon, "prefix"), (FULL, FULL.horizon, "prefix")],
    ids=["tiny_dec", "full_h50_dec", "full_h10_dec", "full_state_token_dec", "tiny_prefix",
         "full_prefix"])
@pytest.mark.parametrize("masked", [False, True])
def test_mqa_gemm_path_matches_reference(fk, stream, cfg, horizon, site, masked):
    # attention_mqa_gemm (S = Q K^T GEMM, masked softmax, P V GEMM) has the flash kernels'
    # semantics: keys below *n_keys + keys_add only (rows past it hold large stale values
    # here, and the rows up to keys_pad are padding), key_mask -> finite constant.
    L = cfg.max_prefix_len
    e = cfg.expert
    H, D = e.num_heads, e.head_dim
    rows = L + horizon
    if site == "decoder":
        n_q, n_keys, add = horizon, L - 37, horizon
    else:
        n_q, n_keys, add = L, L - 37, 0
    n = n_keys + add
    keys_pad = -(-rows // 16) * 16
    q = torch.randn(n_q, H * D, device="cuda").bfloat16()
    k = torch.zeros(keys_pad, D, device="cuda", dtype=torch.bfloat16)
    v = torch.zeros(keys_pad, D, device="cuda", dtype=torch.bfloat16)
    k[:rows] = torch.randn(rows, D, device="cuda").bfloat16()
    v[:rows] = torch.randn(rows, D, device="cuda").bfloat16()
    k[n:rows] = 30.0  # stale cache rows: must not leak into the result
    v[n:rows] = 1e4
    nk = torch.tensor([n_keys], dtype=torch.int32, device="cuda")
    km = (torch.rand(rows, device="cuda") > 0.3).to(torch.uint8) if masked else None
    wsb = fk.attention_mqa_gemm_workspace_bytes(n_q * H, keys_pad)
    ws = torch.empty(wsb, dtype=torch.uint8, device="cuda")
    gws = torch.empty(4 << 20, dtype=torch.uint8, device="cuda")
    out = Guarded((n_q, H * D), torch.bfloat16)
    scale = D ** -0.5

    def call(out_ptr, pad=keys_pad, ws_bytes=wsb):
        fk.attention_mqa_gemm(ptr(q), ptr(k), ptr(v), out_ptr, n_q, rows, pad, H, D, ptr(nk),
                              scale, stream, keys_add=add, key_mask=ptr(km) if masked else 0,
                              workspace=ptr(ws), workspace_bytes=ws_bytes,
                              gemm_workspace=ptr(gws), gemm_workspace_bytes=gws.numel())
    call(ptr(out.t))
    out.check()
    ref = attn_ref(q.view(n_q, H, D), k[:rows].view(rows, 1, D), v[:rows].view(rows, 1, D),
                   scale, n, km)
    close(out.t.view(n_q, H, D), ref)
    with pytest.raises(ValueError, match="multiple of 16"):
        call(ptr(out.t), pad=keys_pad + 8)
    with pytest.raises(ValueError, match="workspace"):
        call(ptr(out.t), ws_bytes=wsb - 1)
