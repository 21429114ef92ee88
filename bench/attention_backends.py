"""A/B of attention backends on the Pi0.5 encoder shapes (issue 15): ours, torch, carried packages.

    python bench/attention_backends.py --out attention_backends.json

Why: issue 15 asks whether a maintained Hopper attention (torch SDPA's flash / cuDNN /
efficient backends, FlashAttention-3, FlashAttention-4, the cuDNN frontend) serves the
prefix (8 query heads over 1 KV head, head_dim 256, a device-side valid length and a
per-key byte mask) and SigLIP (16 heads, head_dim 72, views as the batch) faster than our
kernels before we write a wgmma/TMA kernel of our own. docs/kernels.md ("Attention
backends for the encoders") records what each package claims; this script measures it.

Every backend runs the same bf16 data, read where possible as views of the buffers our
engine holds (q (rows, H*D), the K/V cache (rows, D), SigLIP's packed qkv); a backend that
needs another layout pays for it inside the timing, except where noted in the result.
Timing: CUDA events around CUDA-graph replays of `--inner` calls, p50 / p99 over `--iters`
replays; a backend whose call cannot be captured is timed eagerly and says so
("graph": false, with the capture error). Correctness: one eager call against a float32
reference with our semantics (keys below the valid length, masked keys at the finite
constant), max-abs and cosine. Two prefix mask scenarios: "valid_len" (every key below
the valid length is live: a backend with only a device length is exact) and "view_hole"
(also one camera view's 256 keys masked, as a missing camera gives: only backends with a
per-key mask can run it). Backends that are not installed, or refuse a shape, are listed
with the reason and skipped; without CUDA the script prints why and exits 0.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

MASK = -2.3819763e38  # the reference model's finite mask constant (flash_rt MASK_VALUE)
TOKENS_PER_VIEW = 256
DISTRIBUTIONS = ("torch", "flash-attn", "flash-attn-4", "flash_attn_3", "nvidia-cudnn-frontend",
                 "nvidia-cudnn-cu13", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-base",
                 "quack-kernels", "apache-tvm-ffi")


class Unsupported(Exception):
    """A backend cannot run this case (not installed, or not these semantics)."""


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="attention_backends.json", help="JSON results")
    ap.add_argument("--prefix-rows", default="712,968",
                    help="comma list of prefix rows (2 views + 200 text = 712, 3 views = 968)")
    ap.add_argument("--text-pad", type=int, default=120,
                    help="keys past the valid length (text padding): valid = rows - this")
    ap.add_argument("--views", type=int, default=2, help="SigLIP views (the batch)")
    ap.add_argument("--heads", type=int, default=8, help="prefix query heads")
    ap.add_argument("--head-dim", type=int, default=256, help="prefix head_dim")
    ap.add_argument("--siglip-heads", type=int, default=16)
    ap.add_argument("--siglip-head-dim", type=int, default=72)
    ap.add_argument("--splits", default="1,2",
                    help="key splits tried for FA3 / FA4 (the prefix fills ~64 of 132 SMs)")
    ap.add_argument("--iters", type=int, default=200, help="timed graph replays")
    ap.add_argument("--inner", type=int, default=10, help="calls per replay")
    ap.add_argument("--only", default="",
                    help="comma list of backend name prefixes to run (default: all)")
    ap.add_argument("--no-graph", action="store_true", help="time eagerly (debugging)")
    return ap.parse_args(argv)


# -- environment ---------------------------------------------------------------------------
def versions(torch) -> dict:
    """Package versions that decide which kernels run (installed distributions only)."""
    v: dict[str, Any] = {"python": platform.python_version(), "cuda_runtime": torch.version.cuda,
                         "cudnn_runtime": torch.backends.cudnn.version()}
    for name in DISTRIBUTIONS:
        try:
            v[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return v


def optional_module(name: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # an installed package can fail at import (missing .so)
        raise Unsupported(f"{name} not importable: {exc.__class__.__name__}: {exc}") from exc


# -- timing and comparison -----------------------------------------------------------------
def percentile(sorted_xs: list[float], q: float) -> float:
    return sorted_xs[min(len(sorted_xs) - 1, int(len(sorted_xs) * q))]


def timed(torch, fn: Callable[[], Any], inner: int, iters: int, graph: bool) -> dict:
    """Microseconds per call: CUDA-graph replays of `inner` calls when the call captures,
    else eager calls (the launch overhead is then included, and the result says so)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    res: dict[str, Any] = {"graph": False}
    with torch.cuda.stream(s):
        for _ in range(3):  # JIT compiles, plan caches, workspace growth happen here
            fn()
        s.synchronize()
        run, per = fn, 1
        if graph:
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, stream=s):
                    for _ in range(inner):
                        fn()
                run, per, res["graph"] = g.replay, inner, True
            except Exception as exc:  # a host sync or a forbidden call inside the capture
                res["capture_error"] = f"{exc.__class__.__name__}: {str(exc)[:300]}"
                torch.cuda.synchronize()
        for _ in range(3):
            run()
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)]
        for e0, e1 in ev:
            e0.record()
            run()
            e1.record()
        s.synchronize()
    t = sorted(e0.elapsed_time(e1) * 1000.0 / per for e0, e1 in ev)
    res.update(p50_us=percentile(t, 0.5), p99_us=percentile(t, 0.99), mean_us=statistics.fmean(t))
    return res


def agreement(out, ref) -> dict:
    """max-abs and cosine of a bf16 output against the float32 reference (same shape)."""
    o, r = out.float().reshape(-1), ref.float().reshape(-1)
    cos = float((o @ r) / (o.norm() * r.norm()).clamp_min(1e-30))
    return {"max_abs": float((o - r).abs().max()), "cosine": cos,
            "finite": bool(o.isfinite().all())}


def reference(torch, q, k, v, scale: float, valid: int, keep):
    """float32 attention with our semantics: q (L, H, D), k/v (rows, 1, D); keys j < valid,
    keys with keep[j] == 0 at the finite constant (so an all-masked row averages, not NaN)."""
    k, v = k[:valid, 0].float(), v[:valid, 0].float()
    logits = torch.einsum("qhd,kd->hqk", q.float(), k) * scale
    if keep is not None:
        logits = torch.where(keep[:valid].bool()[None, None, :], logits,
                             torch.tensor(MASK, device=q.device))
    return torch.einsum("hqk,kd->qhd", torch.softmax(logits, -1), v)


# -- the prefix ----------------------------------------------------------------------------
def prefix_case(torch, rows: int, valid: int, heads: int, dim: int, hole: bool) -> dict:
    """Random q (rows, H*D) and a K/V cache padded to 16 rows (the GEMM path's layout), a
    device valid length, the byte mask (and its bool / int32 / additive forms, made once
    per inference in an engine, so outside the timing) and the float32 reference."""
    pad = -(-rows // 16) * 16
    q = torch.randn(rows, heads * dim, device="cuda").bfloat16()
    k = torch.zeros(pad, dim, device="cuda", dtype=torch.bfloat16)
    v = torch.zeros(pad, dim, device="cuda", dtype=torch.bfloat16)
    k[:rows], v[:rows] = torch.randn(2, rows, dim, device="cuda").bfloat16()
    keep = (torch.arange(rows, device="cuda") < valid).to(torch.uint8)
    if hole:
        keep[TOKENS_PER_VIEW:2 * TOKENS_PER_VIEW] = 0  # the second camera view is missing
    # keys that must not count (stale cache rows, a missing view) get large values, so a
    # backend that attends to them shows it in the cosine (as test_attention does)
    dead = torch.nonzero(keep[:rows] == 0).flatten()
    k[dead], v[dead] = 30.0, 1e4
    live = keep.bool()
    scale = dim ** -0.5
    c = {"rows": rows, "valid": valid, "pad": pad, "heads": heads, "dim": dim, "scale": scale,
         "q": q, "k": k, "v": v, "keep": keep, "hole": hole,
         "vl": torch.tensor([valid], dtype=torch.int32, device="cuda"),
         "cu_q": torch.tensor([0, rows], dtype=torch.int32, device="cuda"),
         "cu_k": torch.tensor([0, rows], dtype=torch.int32, device="cuda"),
         # int32 copy for FA4's mask_mod, zero-padded past the last key tile it may read
         "keep_i32": torch.cat([keep.to(torch.int32),
                                torch.zeros(256, dtype=torch.int32, device="cuda")]),
         "attn_mask": live.view(1, 1, 1, rows),
         "bias": torch.where(live, 0.0, MASK).to(torch.bfloat16).view(1, 1, 1, rows)}
    c["ref"] = reference(torch, q.view(rows, heads, dim), k[:rows].view(rows, 1, dim),
                         v[:rows].view(rows, 1, dim), scale, valid, keep if hole else None)
    c["flops"] = 4.0 * heads * rows * int(live.sum()) * dim
    return c


def bshd(c):
    """(1, rows, H, D) / (1, rows, 1, D) views of q and the cache, and BHSD transposes."""
    rows, h, d = c["rows"], c["heads"], c["dim"]
    q = c["q"].view(1, rows, h, d)
    k, v = c["k"][:rows].view(1, rows, 1, d), c["v"][:rows].view(1, rows, 1, d)
    return q, k, v


def prefix_ours(torch, fk, c, impl: str):
    """Our kernels as the engine calls them: the flash kernel (splits 1) or the Hopper
    default, two cuBLASLt GEMMs around a masked softmax (attention_mqa_gemm)."""
    if fk is None:
        raise Unsupported("flash_rt kernel module not built")
    rows, h, d = c["rows"], c["heads"], c["dim"]
    out = torch.empty(rows, h * d, device="cuda", dtype=torch.bfloat16)
    p = {n: c[n].data_ptr() for n in ("q", "k", "v", "vl", "keep")}
    if impl == "flash":
        wsb = max(fk.attention_workspace_bytes(1, rows, h, d, 1), 16)
        ws = torch.empty(wsb, dtype=torch.uint8, device="cuda")

        def fn():
            fk.attention_prefix(p["q"], p["k"], p["v"], out.data_ptr(), rows, h, 1, d, p["vl"],
                                c["scale"], torch.cuda.current_stream().cuda_stream,
                                key_mask=p["keep"], splits=1, workspace=ws.data_ptr(),
                                workspace_bytes=wsb)
            return out
        return fn, "full (device length + byte mask)"
    wsb = fk.attention_mqa_gemm_workspace_bytes(rows * h, c["pad"])
    ws = torch.empty(wsb, dtype=torch.uint8, device="cuda")
    gws = torch.empty(4 << 20, dtype=torch.uint8, device="cuda")  # GEMM_WORKSPACE_BYTES

    def fn():
        fk.attention_mqa_gemm(p["q"], p["k"], p["v"], out.data_ptr(), rows, rows, c["pad"], h, d,
                              p["vl"], c["scale"], torch.cuda.current_stream().cuda_stream,
                              keys_add=0, key_mask=p["keep"], workspace=ws.data_ptr(),
                              workspace_bytes=wsb, gemm_workspace=gws.data_ptr(),
                              gemm_workspace_bytes=gws.numel())
        return out
    return fn, "full (device length + byte mask)"


def sdpa_call(torch, backend_name: str, q4, k4, v4, scale, mask=None):
    """F.scaled_dot_product_attention restricted to one backend; GQA through enable_gqa."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def fn():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, scale=scale,
                                                  enable_gqa=q4.shape[1] != k4.shape[1])
    return fn


def prefix_sdpa(torch, c, backend_name: str, masked: bool):
    """SDPA on views of our buffers. masked: a bool key mask (1, 1, 1, rows) carries both
    the valid length and the holes (device-side); else K/V are sliced to the valid length
    on the host, which a graph that serves every prompt length cannot do (an upper bound)."""
    q, k, v = bshd(c)
    q4, k4, v4 = (t.transpose(1, 2) for t in (q, k, v))  # (1, H, rows, D) views
    if masked:
        fn = sdpa_call(torch, backend_name, q4, k4, v4, c["scale"], c["attn_mask"])
        return (lambda: fn().transpose(1, 2)), "full (bool mask)"
    if c["hole"]:
        raise Unsupported("no per-key mask without attn_mask")
    n = c["valid"]
    fn = sdpa_call(torch, backend_name, q4, k4[:, :, :n], v4[:, :, :n], c["scale"])
    return (lambda: fn().transpose(1, 2)), \
        "host length (K/V sliced: an upper bound, not graph-reusable across lengths)"


def prefix_aten_varlen(torch, c):
    """torch's own FA2 varlen entry with seqused_k: the device length, no extra package."""
    if c["hole"]:
        raise Unsupported("seqused_k only: no per-key mask")
    rows, h, d = c["rows"], c["heads"], c["dim"]
    q3 = c["q"].view(rows, h, d)
    k3, v3 = c["k"][:rows].view(rows, 1, d), c["v"][:rows].view(rows, 1, d)

    def fn():
        return torch.ops.aten._flash_attention_forward(
            q3, k3, v3, c["cu_q"], c["cu_k"], rows, rows, 0.0, False, False, scale=c["scale"],
            seqused_k=c["vl"])[0]
    return fn, "device length (seqused_k)"


def first(res):
    return res[0] if isinstance(res, (tuple, list)) else res


def prefix_fa3(torch, c, splits: int):
    """FlashAttention-3 (hopper/, module flash_attn_interface): varlen with seqused_k."""
    if c["hole"]:
        raise Unsupported("seqused_k only: no per-key mask")
    fa3 = optional_module("flash_attn_interface")
    rows, h, d = c["rows"], c["heads"], c["dim"]
    q3 = c["q"].view(rows, h, d)
    k3, v3 = c["k"][:rows].view(rows, 1, d), c["v"][:rows].view(rows, 1, d)

    def fn():
        return first(fa3.flash_attn_varlen_func(q3, k3, v3, c["cu_q"], c["cu_k"], rows, rows,
                                                seqused_k=c["vl"], softmax_scale=c["scale"],
                                                num_splits=splits, pack_gqa=True))
    return fn, "device length (seqused_k)"


def fa4_key_mask_mod():
    """FA4 mask_mod (CuTe DSL) keeping key n iff aux_tensors[0][n] != 0: our byte mask,
    widened to int32 once per inference outside the timing."""
    import cutlass
    from cutlass import cute
    from flash_attn.cute import utils

    @cute.jit
    def key_mask(batch, head, m_idx, n_idx, seqlen_info, aux_tensors):
        keep = utils.scalar_to_ssa(aux_tensors[0][n_idx[0]], cutlass.Int32)
        return keep > 0
    return key_mask


def prefix_fa4(torch, c, splits: int, mask_mod: bool):
    """FlashAttention-4 (flash_attn.cute, CuTe DSL, JIT-compiled on the first call): varlen
    with seqused_k, optionally with a mask_mod reading the byte mask (the holes)."""
    if c["hole"] and not mask_mod:
        raise Unsupported("seqused_k only: no per-key mask")
    fa4 = optional_module("flash_attn.cute")
    rows, h, d = c["rows"], c["heads"], c["dim"]
    q3 = c["q"].view(rows, h, d)
    k3, v3 = c["k"][:rows].view(rows, 1, d), c["v"][:rows].view(rows, 1, d)
    kw: dict[str, Any] = {}
    if mask_mod:
        kw = {"mask_mod": fa4_key_mask_mod(), "aux_tensors": [c["keep_i32"]]}

    def fn():
        return first(fa4.flash_attn_varlen_func(q3, k3, v3, cu_seqlens_q=c["cu_q"],
                                                cu_seqlens_k=c["cu_k"], max_seqlen_q=rows,
                                                max_seqlen_k=rows, seqused_k=c["vl"],
                                                softmax_scale=c["scale"], num_splits=splits,
                                                pack_gqa=True, **kw))
    return fn, "full (seqused_k + mask_mod)" if mask_mod else "device length (seqused_k)"


def cudnn_fe_graph(torch, q4, k4, v4, out4, scale, seq_q=None, seq_kv=None, bias=None):
    """A cuDNN-frontend SDPA graph (inference, fp32 softmax) executing into out4; the
    padding mask takes device lengths (B, 1, 1, 1), bias an additive (1, 1, 1, S_kv) term."""
    cudnn = optional_module("cudnn")
    handle = cudnn.create_handle()
    try:
        g = cudnn.pygraph(io_data_type=cudnn.data_type.BFLOAT16,
                          intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle,
                          is_cuda_graph_replay_expected=True)
    except TypeError:  # frontends before the replay hint
        g = cudnn.pygraph(io_data_type=cudnn.data_type.BFLOAT16,
                          intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    pack: dict[Any, Any] = {}

    def bind(t):
        node = g.tensor_like(t)
        pack[node] = t
        return node
    kw: dict[str, Any] = {"attn_scale": scale}
    if seq_kv is not None:
        kw.update(use_padding_mask=True, seq_len_q=bind(seq_q), seq_len_kv=bind(seq_kv))
    if bias is not None:
        kw["bias"] = bind(bias)
    tq, tk, tv = bind(q4), bind(k4), bind(v4)
    try:
        o, _ = g.sdpa(q=tq, k=tk, v=tv, generate_stats=False, name="attn", **kw)
    except TypeError:  # older frontends: is_inference instead of generate_stats
        o, _ = g.sdpa(q=tq, k=tk, v=tv, is_inference=True, name="attn", **kw)
    o.set_output(True).set_dim(list(out4.shape)).set_stride(list(out4.stride()))
    pack[o] = out4
    g.build([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    ws = torch.empty(max(g.get_workspace_size(), 16), dtype=torch.uint8, device="cuda")

    def fn():
        cudnn.set_stream(handle, torch.cuda.current_stream().cuda_stream)
        g.execute(pack, ws, handle=handle)
        return out4
    return fn


def prefix_cudnn_fe(torch, c, with_bias: bool):
    """The cuDNN frontend directly: padding mask from the device length, and optionally the
    byte mask as an additive bias (made once per inference, outside the timing)."""
    q, k, v = bshd(c)
    rows, h, d = c["rows"], c["heads"], c["dim"]
    out = torch.empty(rows, h * d, device="cuda", dtype=torch.bfloat16)
    q4, k4, v4 = (t.transpose(1, 2) for t in (q, k, v))
    out4 = out.view(1, rows, h, d).transpose(1, 2)
    if c["hole"] and not with_bias:
        raise Unsupported("padding mask only: no per-key mask")
    seq_q = torch.full((1, 1, 1, 1), rows, dtype=torch.int32, device="cuda")
    fn = cudnn_fe_graph(torch, q4, k4, v4, out4, c["scale"], seq_q, c["vl"].view(1, 1, 1, 1),
                        c["bias"] if with_bias else None)
    return (lambda: fn().transpose(1, 2)), \
        "full (seq_len_kv + additive bias)" if with_bias else "device length (padding mask)"


def prefix_backends(torch, fk, c, splits: list[int]):
    """(name, builder) pairs; a builder returns (fn, semantics) or raises Unsupported."""
    b: list[tuple[str, Callable[[], Any]]] = [
        ("ours_gemm", lambda: prefix_ours(torch, fk, c, "gemm")),
        ("ours_flash", lambda: prefix_ours(torch, fk, c, "flash")),
        ("aten_flash_varlen", lambda: prefix_aten_varlen(torch, c)),
        ("sdpa_flash_sliced", lambda: prefix_sdpa(torch, c, "FLASH_ATTENTION", False)),
        ("sdpa_cudnn_sliced", lambda: prefix_sdpa(torch, c, "CUDNN_ATTENTION", False)),
        ("sdpa_cudnn_mask", lambda: prefix_sdpa(torch, c, "CUDNN_ATTENTION", True)),
        ("sdpa_efficient_mask", lambda: prefix_sdpa(torch, c, "EFFICIENT_ATTENTION", True)),
        ("cudnn_fe_padding", lambda: prefix_cudnn_fe(torch, c, False)),
        ("cudnn_fe_bias", lambda: prefix_cudnn_fe(torch, c, True))]
    for s in splits:
        b += [(f"fa3_seqused_s{s}", lambda s=s: prefix_fa3(torch, c, s)),
              (f"fa4_seqused_s{s}", lambda s=s: prefix_fa4(torch, c, s, False)),
              (f"fa4_maskmod_s{s}", lambda s=s: prefix_fa4(torch, c, s, True))]
    return b


# -- SigLIP --------------------------------------------------------------------------------
def siglip_case(torch, views: int, heads: int, dim: int) -> dict:
    """Packed qkv (views*256, 3*H*D) as SigLIP's QKV GEMM writes it, and the fp32 reference
    per view (no mask)."""
    import torch.nn.functional as F

    t, w = TOKENS_PER_VIEW, heads * dim
    qkv = torch.randn(views * t, 3 * w, device="cuda").bfloat16()
    x = qkv.float().view(views, t, 3, heads, dim).permute(2, 0, 3, 1, 4)  # (3, V, H, T, D)
    ref = F.scaled_dot_product_attention(x[0], x[1], x[2]).transpose(1, 2)  # (V, T, H, D)
    return {"views": views, "heads": heads, "dim": dim, "qkv": qkv, "ref": ref,
            "flops": 4.0 * views * heads * t * t * dim}


def siglip_views(c):
    """(V, T, H, D) strided views of q, k, v inside the packed qkv (no copy)."""
    x = c["qkv"].view(c["views"], TOKENS_PER_VIEW, 3, c["heads"], c["dim"])
    return x[:, :, 0], x[:, :, 1], x[:, :, 2]


def siglip_ours(torch, fk, c):
    if fk is None:
        raise Unsupported("flash_rt kernel module not built")
    v, h, d = c["views"], c["heads"], c["dim"]
    out = torch.empty(v * TOKENS_PER_VIEW, h * d, device="cuda", dtype=torch.bfloat16)

    def fn():
        fk.attention_siglip(c["qkv"].data_ptr(), out.data_ptr(), v, TOKENS_PER_VIEW, h, d,
                            torch.cuda.current_stream().cuda_stream)
        return out.view(v, TOKENS_PER_VIEW, h, d)
    return fn, "no mask"


def siglip_sdpa(torch, c, backend_name: str):
    q, k, v = (t.transpose(1, 2) for t in siglip_views(c))  # (V, H, T, D) views
    fn = sdpa_call(torch, backend_name, q, k, v, c["dim"] ** -0.5)
    return (lambda: fn().transpose(1, 2)), "no mask"


def siglip_fa(torch, c, module: str):
    """FA3 (flash_attn_interface) or FA4 (flash_attn.cute) dense call on the strided views;
    head_dim 72 is padded inside (FA3 to 96, FA4 to 80)."""
    fa = optional_module(module)
    q, k, v = siglip_views(c)
    return (lambda: first(fa.flash_attn_func(q, k, v, softmax_scale=c["dim"] ** -0.5))), "no mask"


def siglip_cudnn_fe(torch, c):
    q, k, v = (t.transpose(1, 2) for t in siglip_views(c))
    vv, h, d = c["views"], c["heads"], c["dim"]
    out = torch.empty(vv, TOKENS_PER_VIEW, h, d, device="cuda", dtype=torch.bfloat16)
    fn = cudnn_fe_graph(torch, q, k, v, out.transpose(1, 2), d ** -0.5)
    return (lambda: fn().transpose(1, 2)), "no mask"


def siglip_backends(torch, fk, c):
    return [("ours_siglip", lambda: siglip_ours(torch, fk, c)),
            ("sdpa_flash", lambda: siglip_sdpa(torch, c, "FLASH_ATTENTION")),
            ("sdpa_cudnn", lambda: siglip_sdpa(torch, c, "CUDNN_ATTENTION")),
            ("sdpa_efficient", lambda: siglip_sdpa(torch, c, "EFFICIENT_ATTENTION")),
            ("fa3", lambda: siglip_fa(torch, c, "flash_attn_interface")),
            ("fa4", lambda: siglip_fa(torch, c, "flash_attn.cute")),
            ("cudnn_fe", lambda: siglip_cudnn_fe(torch, c))]


# -- driver --------------------------------------------------------------------------------
def run_backend(torch, name: str, build, case: dict, meta: dict, args) -> dict:
    """Build, check once eagerly against the reference, then time; every failure becomes
    the row's reason instead of stopping the run."""
    row = dict(meta, backend=name)
    try:
        fn, row["semantics"] = build()
        out = fn()
        torch.cuda.synchronize()
        row.update(agreement(out, case["ref"]))
        row.update(timed(torch, fn, args.inner, args.iters, not args.no_graph))
        row["tflops"] = case["flops"] / (row["p50_us"] * 1e-6) / 1e12
    except Unsupported as exc:
        row["skipped"] = str(exc)
    except Exception as exc:
        row["error"] = f"{exc.__class__.__name__}: {str(exc)[:400]}"
        try:
            torch.cuda.synchronize()
        except Exception as sticky:  # a device fault poisons the context: say so per row
            row["error"] += f" (then: {sticky.__class__.__name__}: {str(sticky)[:200]})"
    print(describe(row), flush=True)
    return row


def describe(row: dict) -> str:
    head = f"{row['case']:30s} {row['backend']:22s}"
    if "p50_us" in row:
        return (f"{head} {row['p50_us']:8.2f} us (p99 {row['p99_us']:7.2f}) "
                f"{row['tflops']:6.1f} TFLOP/s  cos {row['cosine']:.6f} max|d| "
                f"{row['max_abs']:.3g}{'' if row['graph'] else '  [eager]'}  {row['semantics']}")
    return f"{head} {'skipped: ' + row['skipped'] if 'skipped' in row else 'ERROR ' + row['error']}"


def selected(name: str, only: list[str]) -> bool:
    return not only or any(name.startswith(p) for p in only)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("attention_backends: torch is not installed; nothing to measure (skipped)")
        return 0
    if not torch.cuda.is_available():
        print("attention_backends: CUDA is not available; run it on the GPU machine "
              "(bench/device/attention_backends_session.sh). Skipped.")
        return 0
    from flash_rt import kernels

    try:
        fk = kernels.load()
    except kernels.KernelsUnavailable as exc:
        print(f"attention_backends: our kernels are not built, 'ours' rows are skipped ({exc})")
        fk = None
    torch.manual_seed(0)
    only = [s for s in args.only.split(",") if s]
    splits = [int(s) for s in args.splits.split(",") if s]
    res = {"device": torch.cuda.get_device_name(),
           "capability": list(torch.cuda.get_device_capability()),
           "date": datetime.date.today().isoformat(), "versions": versions(torch),
           "built_archs": fk.built_archs() if fk is not None else None,
           "args": vars(args), "results": []}

    def record(row: dict) -> None:
        """Append and rewrite the JSON: a JIT compile that runs into the command's time limit
        still leaves every finished row behind."""
        res["results"].append(row)
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)

    for rows in (int(r) for r in args.prefix_rows.split(",") if r):
        valid = rows - args.text_pad
        for hole in (False, True):
            c = prefix_case(torch, rows, valid, args.heads, args.head_dim, hole)
            meta = {"case": f"prefix {rows} rows ({'view_hole' if hole else 'valid_len'})",
                    "rows": rows, "valid": valid, "mask": "view_hole" if hole else "valid_len"}
            for name, build in prefix_backends(torch, fk, c, splits):
                if selected(name, only):
                    record(run_backend(torch, name, build, c, meta, args))
    c = siglip_case(torch, args.views, args.siglip_heads, args.siglip_head_dim)
    meta = {"case": f"siglip {args.views}x{TOKENS_PER_VIEW} tok", "views": args.views}
    for name, build in siglip_backends(torch, fk, c):
        if selected(name, only):
            record(run_backend(torch, name, build, c, meta, args))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
