"""A small action-expert step (embed -> norm -> FP8 GEMM -> RoPE/KV write -> decoder
attention with split-K -> gated residual + adaRMS -> GeGLU -> Euler) captured into one CUDA
Graph: replay equals eager bit for bit, and device-side lengths change it without
re-capture."""
from __future__ import annotations

import math

import torch

from kutil import TINY, fp8_ref, ptr, scalar


def build(fk, cfg):
    e, p = cfg.expert, cfg.prefix
    H, Hkv, D, W = e.num_heads, e.num_kv_heads, e.head_dim, e.width
    T, L, Fm = cfg.horizon, cfg.max_prefix_len, e.mlp_dim
    rows = L + T
    dev = "cuda"
    st = {}
    st["ids"] = torch.randint(0, p.vocab_size, (T,), device=dev, dtype=torch.int32)
    st["table"] = torch.randn(p.vocab_size, W, device=dev).bfloat16()
    st["x"] = torch.empty(T, W, device=dev, dtype=torch.bfloat16)
    st["h8"] = torch.empty(T, W, device=dev, dtype=torch.float8_e4m3fn)
    wq = torch.randn((H + 2 * Hkv) * D, W, device=dev) / math.sqrt(W)
    st["w_qkv"] = fp8_ref(wq, float(wq.abs().max()) / 448)
    st["s_w"] = scalar(float(wq.abs().max()) / 448)
    st["s_h"] = scalar(0.05)
    st["qkv"] = torch.empty(T, (H + 2 * Hkv) * D, device=dev, dtype=torch.bfloat16)
    st["pos"] = torch.arange(T, device=dev, dtype=torch.int32) + 500
    st["prefix_len"] = torch.tensor([500], dtype=torch.int32, device=dev)
    st["q"] = torch.empty(T, H * D, device=dev, dtype=torch.bfloat16)
    st["kc"] = torch.randn(rows, Hkv * D, device=dev).bfloat16()
    st["vc"] = torch.randn(rows, Hkv * D, device=dev).bfloat16()
    st["att"] = torch.empty(T, H * D, device=dev, dtype=torch.bfloat16)
    st["att8"] = torch.empty(T, H * D, device=dev, dtype=torch.float8_e4m3fn)
    wo = torch.randn(W, H * D, device=dev) / math.sqrt(H * D)
    st["w_o"] = fp8_ref(wo, float(wo.abs().max()) / 448)
    st["s_wo"] = scalar(float(wo.abs().max()) / 448)
    st["s_att"] = scalar(0.01)
    st["y"] = torch.empty(T, W, device=dev, dtype=torch.bfloat16)
    st["splits"] = 4
    st["ws_bytes"] = fk.attention_workspace_bytes(1, T, H, D, 4)
    st["ws"] = torch.empty(st["ws_bytes"], dtype=torch.uint8, device=dev)
    st["mod"] = torch.randn(1, 3 * W, device=dev) * 0.3
    st["gu"] = torch.randn(T, 2 * Fm, device=dev).bfloat16()
    st["g8"] = torch.empty(T, Fm, device=dev, dtype=torch.float8_e4m3fn)
    st["xa"] = torch.randn(T * W, device=dev)
    st["xa16"] = torch.empty(T * W, device=dev, dtype=torch.bfloat16)
    st["dims"] = (H, Hkv, D, W, T, L, Fm, rows)
    return st


def step(fk, st, s):
    H, Hkv, D, W, T, L, Fm, rows = st["dims"]
    eps = 1e-6
    fk.embed_gather(ptr(st["ids"]), ptr(st["table"]), ptr(st["x"]), T, W, st["table"].shape[0],
                    math.sqrt(W), s)
    fk.adarms_fp8(ptr(st["x"]), ptr(st["mod"]), ptr(st["h8"]), ptr(st["s_h"]), T, W, eps, T, s)
    fk.gemm_fp8(ptr(st["h8"]), ptr(st["w_qkv"]), ptr(st["qkv"]), T, (H + 2 * Hkv) * D, W,
                ptr(st["s_h"]), ptr(st["s_w"]), s)
    fk.rope_qkv_split(ptr(st["qkv"]), ptr(st["pos"]), ptr(st["q"]), ptr(st["kc"]), ptr(st["vc"]),
                      ptr(st["prefix_len"]), T, H, Hkv, D, rows, 10000.0, D ** -0.5, s)
    fk.attention_decoder(ptr(st["q"]), ptr(st["kc"]), ptr(st["vc"]), ptr(st["att"]), T, rows, H,
                         Hkv, D, ptr(st["prefix_len"]), 1.0, s, splits=st["splits"],
                         workspace=ptr(st["ws"]), workspace_bytes=st["ws_bytes"])
    fk.quantize_fp8_static(ptr(st["att"]), ptr(st["att8"]), ptr(st["s_att"]), T * H * D, s)
    fk.gemm_fp8(ptr(st["att8"]), ptr(st["w_o"]), ptr(st["y"]), T, W, H * D, ptr(st["s_att"]),
                ptr(st["s_wo"]), s)
    fk.gated_residual_adarms_fp8(ptr(st["x"]), ptr(st["y"]), ptr(st["mod"]), ptr(st["mod"]),
                                 ptr(st["h8"]), ptr(st["s_h"]), T, W, eps, T, s)
    fk.geglu_fp8(ptr(st["gu"]), ptr(st["g8"]), ptr(st["s_h"]), T, Fm, s)
    fk.euler_step(ptr(st["xa"]), ptr(st["x"]), ptr(st["xa16"]), T * W, -0.1, s)


OUTS = ("x", "h8", "qkv", "q", "kc", "vc", "att", "att8", "y", "g8", "xa", "xa16")


def snapshot(st):
    return {k: st[k].clone() for k in OUTS}


def test_graph_replay_matches_eager_and_follows_device_lengths(fk):
    cfg = TINY
    torch.manual_seed(1)
    st = build(fk, cfg)
    s = torch.cuda.Stream()
    init = {k: st[k].clone() for k in ("kc", "vc", "xa")}

    def reset():
        for k, v in init.items():
            st[k].copy_(v)

    # eager reference
    with torch.cuda.stream(s):
        step(fk, st, s.cuda_stream)  # warm-up (plans, smem attributes) outside capture
    s.synchronize()
    reset()
    with torch.cuda.stream(s):
        step(fk, st, s.cuda_stream)
    s.synchronize()
    eager = snapshot(st)

    reset()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        step(fk, st, s.cuda_stream)
    reset()
    g.replay()
    torch.cuda.synchronize()
    for k in OUTS:
        assert torch.equal(st[k].view(torch.uint8), eager[k].view(torch.uint8)), k

    # change the device-side prefix length: the same graph now writes/reads other rows
    reset()
    st["prefix_len"].fill_(333)
    st["pos"].copy_(torch.arange(st["dims"][4], device="cuda", dtype=torch.int32) + 333)
    g.replay()
    torch.cuda.synchronize()
    replayed = snapshot(st)
    reset()
    with torch.cuda.stream(s):
        step(fk, st, s.cuda_stream)
    s.synchronize()
    for k in OUTS:
        assert torch.equal(replayed[k].view(torch.uint8), st[k].view(torch.uint8)), k
    assert not torch.equal(replayed["att"], eager["att"])
