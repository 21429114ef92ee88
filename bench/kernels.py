"""Benchmark of flash_rt_kernels on the Pi0.5 shapes, next to the torch equivalents.

    python bench/kernels.py --out bench_kernels.json --md bench_kernels.md

Every number is GPU time per call from CUDA events around a CUDA Graph that replays the
call `--inner` times (launch overhead excluded for ours and torch alike); p50 / p99 over
`--reps` replays. Inputs stay resident in L2 where they fit (weights of one layer), which
favours small shapes equally for both sides. GEMMs: ours = cuBLASLt FP8 after the per-shape
autotune; torch._scaled_mm (FP8, same scales, bf16 out) and bf16 F.linear. Attention: ours
vs F.scaled_dot_product_attention on the same bf16 data (K/V pre-expanded to all heads for
SDPA, outside the timing). Elementwise: achieved GB/s (bytes read + written) vs the HBM peak.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from flash_rt import kernels  # noqa: E402
from flash_rt.configs import load_config  # noqa: E402
from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP  # noqa: E402

# Dense peaks by device name (vendor datasheets, SXM parts): TFLOP/s and TB/s.
PEAKS = {
    "H100": {"fp8": 1979.0, "bf16": 989.0, "hbm_tbs": 3.35},
    "H200": {"fp8": 1979.0, "bf16": 989.0, "hbm_tbs": 4.8},
}
WS_BYTES = 32 << 20


def peaks_for(name: str):
    for k, v in PEAKS.items():
        if k in name:
            return v
    return {"fp8": None, "bf16": None, "hbm_tbs": None}


def timed(fn, inner: int, reps: int):
    """p50/p99/mean microseconds per call of fn, replayed from a CUDA graph."""
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(s.cuda_stream)
    s.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        for _ in range(inner):
            fn(s.cuda_stream)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(reps)]
    for e0, e1 in ev:
        e0.record()
        g.replay()
        e1.record()
    torch.cuda.synchronize()
    t = sorted(e0.elapsed_time(e1) * 1000.0 / inner for e0, e1 in ev)
    return {"p50_us": t[len(t) // 2], "p99_us": t[min(len(t) - 1, int(len(t) * 0.99))],
            "mean_us": statistics.fmean(t)}


def q8(x, s):
    return (x.float() / s).clamp(-448, 448).to(torch.float8_e4m3fn)


def bench_gemms(fk, cfg, args, peak):
    rows = []
    ws = torch.empty(WS_BYTES, dtype=torch.uint8, device="cuda")
    shapes = kernels.gemm_shapes(cfg) + [
        (n + "_h10", 10, N, K) for n, M, N, K in kernels.gemm_shapes(cfg) if n.startswith("expert")]
    for name, M, N, K in shapes:
        a = torch.randn(M, K, device="cuda")
        w = torch.randn(N, K, device="cuda") / math.sqrt(K)
        sa = torch.tensor([float(a.abs().max()) / 448], device="cuda")
        sb = torch.tensor([float(w.abs().max()) / 448], device="cuda")
        aq, wq = q8(a, sa), q8(w, sb)
        out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        tune = fk.gemm_fp8_autotune(aq.data_ptr(), wq.data_ptr(), out.data_ptr(), M, N, K,
                                    sa.data_ptr(), sb.data_ptr(), 0, workspace=ws.data_ptr(),
                                    workspace_bytes=WS_BYTES, iters=10)
        torch.cuda.synchronize()
        ours = timed(lambda s: fk.gemm_fp8(aq.data_ptr(), wq.data_ptr(), out.data_ptr(), M, N, K,
                                           sa.data_ptr(), sb.data_ptr(), s,
                                           workspace=ws.data_ptr(), workspace_bytes=WS_BYTES),
                     args.inner, args.reps)
        note = ""
        try:
            sm = timed(lambda s: torch._scaled_mm(aq, wq.t(), sa[0], sb[0], out_dtype=torch.bfloat16),
                       args.inner, args.reps)
        except (RuntimeError, ValueError) as exc:  # shape limits of _scaled_mm
            pad = (M + 15) // 16 * 16
            ap = torch.zeros(pad, K, device="cuda").to(torch.float8_e4m3fn)
            try:
                sm = timed(lambda s: torch._scaled_mm(ap, wq.t(), sa[0], sb[0],
                                                      out_dtype=torch.bfloat16),
                           args.inner, args.reps)
                note = f"_scaled_mm needs M%16: timed with M={pad}"
            except (RuntimeError, ValueError):
                sm, note = None, f"_scaled_mm failed: {str(exc)[:80]}"
        ab, wb = a.bfloat16(), w.bfloat16()
        mm = timed(lambda s: F.linear(ab, wb), args.inner, args.reps)
        flops = 2.0 * M * N * K
        tf = lambda r: None if r is None else flops / (r["p50_us"] * 1e-6) / 1e12
        rows.append({
            "name": name, "M": M, "N": N, "K": K, "ours_fp8": ours, "torch_scaled_mm": sm,
            "torch_bf16": mm, "ours_tflops": tf(ours), "scaled_mm_tflops": tf(sm),
            "bf16_tflops": tf(mm),
            "ours_pct_fp8_peak": None if not peak["fp8"] else 100 * tf(ours) / peak["fp8"],
            "autotune": tune, "note": note})
        print(f"gemm {name:18s} M={M:5d} N={N:6d} K={K:6d} ours {ours['p50_us']:8.2f}us "
              f"scaled_mm {sm['p50_us'] if sm else float('nan'):8.2f}us bf16 {mm['p50_us']:8.2f}us",
              flush=True)
    return rows


def timed_impls(fn, args):
    """Times fn once per attention kernel variant in args.attn_impls (FLASH_RT_ATTN_KERNEL,
    read by the launcher at capture time); returns (first variant's timing, all)."""
    res = {}
    old = os.environ.get("FLASH_RT_ATTN_KERNEL")
    try:
        for impl in args.attn_impls:
            os.environ["FLASH_RT_ATTN_KERNEL"] = impl
            res[impl] = timed(fn, args.inner, args.reps)
    finally:
        if old is None:
            os.environ.pop("FLASH_RT_ATTN_KERNEL", None)
        else:
            os.environ["FLASH_RT_ATTN_KERNEL"] = old
    return res[args.attn_impls[0]], res


def bench_attention(fk, cfg, args):
    rows = []
    sc, p = cfg.siglip, cfg.prefix
    V, T = cfg.num_views, cfg.tokens_per_view
    # SigLIP
    H, D = sc.num_heads, sc.head_dim
    W = H * D
    qkv = torch.randn(V * T, 3 * W, device="cuda").bfloat16()
    out = torch.empty(V * T, W, device="cuda", dtype=torch.bfloat16)
    x = qkv.view(V, T, 3, H, D).permute(2, 0, 3, 1, 4).contiguous()
    ours, by = timed_impls(
        lambda s: fk.attention_siglip(qkv.data_ptr(), out.data_ptr(), V, T, H, D, s), args)
    ref = timed(lambda s: F.scaled_dot_product_attention(x[0], x[1], x[2]), args.inner, args.reps)
    rows.append({"name": f"siglip {V}x{T} tok, {H}x{D}", "flops": 4.0 * V * H * T * T * D,
                 "ours": ours, "ours_by_impl": by, "sdpa": ref})
    # prefix and decoder (MQA 8:1, head_dim 256)
    H, Hkv, D = p.num_heads, p.num_kv_heads, p.head_dim
    L = cfg.max_prefix_len
    for hz in (cfg.horizon, 10):
        rows_c = L + hz
        kc = torch.randn(rows_c, Hkv * D, device="cuda").bfloat16()
        vc = torch.randn(rows_c, Hkv * D, device="cuda").bfloat16()
        if hz == cfg.horizon:
            q = torch.randn(L, H * D, device="cuda").bfloat16()
            o = torch.empty_like(q)
            vl = torch.tensor([L], dtype=torch.int32, device="cuda")
            qs = q.view(1, L, H, D).transpose(1, 2).contiguous()
            ks = kc[:L].view(1, L, 1, D).transpose(1, 2).repeat(1, H, 1, 1).contiguous()
            vs = vc[:L].view(1, L, 1, D).transpose(1, 2).repeat(1, H, 1, 1).contiguous()
            for splits in (1, 2, 3):
                wsb = fk.attention_workspace_bytes(1, L, H, D, splits)
                ws = torch.empty(max(wsb, 16), dtype=torch.uint8, device="cuda")
                r, by = timed_impls(
                    lambda s: fk.attention_prefix(q.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                                                  o.data_ptr(), L, H, Hkv, D, vl.data_ptr(),
                                                  D ** -0.5, s, splits=splits,
                                                  workspace=ws.data_ptr(), workspace_bytes=wsb),
                    args)
                rows.append({"name": f"prefix L={L}, {H}:{Hkv} x {D}, splits={splits}",
                             "flops": 4.0 * H * L * L * D, "ours": r, "ours_by_impl": by,
                             "sdpa": timed(lambda s: F.scaled_dot_product_attention(qs, ks, vs),
                                           args.inner, args.reps) if splits == 1 else None})
        q = torch.randn(hz, H * D, device="cuda").bfloat16()
        o = torch.empty_like(q)
        pl = torch.tensor([L], dtype=torch.int32, device="cuda")
        nk = L + hz
        qs = q.view(1, hz, H, D).transpose(1, 2).contiguous()
        ks = kc[:nk].view(1, nk, 1, D).transpose(1, 2).repeat(1, H, 1, 1).contiguous()
        vs = vc[:nk].view(1, nk, 1, D).transpose(1, 2).repeat(1, H, 1, 1).contiguous()
        sd = timed(lambda s: F.scaled_dot_product_attention(qs, ks, vs), args.inner, args.reps)
        for splits in (1, 4, 8, 12, 16, 24):
            wsb = fk.attention_workspace_bytes(1, hz, H, D, splits)
            ws = torch.empty(max(wsb, 16), dtype=torch.uint8, device="cuda")
            r, by = timed_impls(
                lambda s: fk.attention_decoder(q.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                                               o.data_ptr(), hz, rows_c, H, Hkv, D,
                                               pl.data_ptr(), D ** -0.5, s, splits=splits,
                                               workspace=ws.data_ptr(), workspace_bytes=wsb),
                args)
            rows.append({"name": f"decoder {hz} q x {nk} keys, splits={splits}",
                         "flops": 4.0 * H * hz * nk * D, "ours": r, "ours_by_impl": by,
                         "sdpa": sd if splits == 1 else None})
    for r in rows:
        for k in ("ours", "sdpa"):
            if r[k]:
                r[k + "_tflops"] = r["flops"] / (r[k]["p50_us"] * 1e-6) / 1e12
        impls = " ".join(f"{k} {v['p50_us']:.2f}" for k, v in r.get("ours_by_impl", {}).items())
        print(f"attn {r['name']:42s} ours {r['ours']['p50_us']:8.2f}us "
              f"sdpa {r['sdpa']['p50_us'] if r['sdpa'] else float('nan'):8.2f}us  [{impls}]",
              flush=True)
    return rows


def bench_elementwise(fk, cfg, args, peak):
    rows = []
    eps = cfg.prefix.rms_norm_eps
    dev = "cuda"
    s1 = torch.tensor([0.05], device=dev)
    p, e, sc = cfg.prefix, cfg.expert, cfg.siglip
    Lp, T, Ms = cfg.max_prefix_len, cfg.horizon, cfg.num_views * cfg.tokens_per_view

    def add(name, nbytes, fn, torch_fn=None):
        r = timed(fn, args.inner, args.reps)
        row = {"name": name, "bytes": nbytes, "ours": r,
               "ours_gbs": nbytes / (r["p50_us"] * 1e-6) / 1e9}
        if peak["hbm_tbs"]:
            row["ours_pct_hbm"] = 100 * row["ours_gbs"] / (peak["hbm_tbs"] * 1000)
        if torch_fn is not None:
            row["torch_eager"] = timed(lambda s: torch_fn(), args.inner, args.reps)
        rows.append(row)
        print(f"elem {name:34s} {r['p50_us']:8.2f}us {row['ours_gbs']:8.1f} GB/s", flush=True)

    x = torch.randn(Lp, p.width, device=dev).bfloat16()
    w = torch.randn(p.width, device=dev).bfloat16()
    o8 = torch.empty(Lp, p.width, device=dev, dtype=torch.float8_e4m3fn)
    add(f"rmsnorm_fp8 {Lp}x{p.width}", x.numel() * 3 + p.width * 2,
        lambda s: fk.rmsnorm_fp8(x.data_ptr(), w.data_ptr(), o8.data_ptr(), s1.data_ptr(), Lp,
                                 p.width, eps, True, s),
        lambda: q8(x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
                   * (1 + w.float()), s1))
    xs = torch.randn(Ms, sc.width, device=dev).bfloat16()
    ws_, bs_ = torch.randn(sc.width, device=dev).bfloat16(), torch.randn(sc.width, device=dev).bfloat16()
    os8 = torch.empty(Ms, sc.width, device=dev, dtype=torch.float8_e4m3fn)
    add(f"layernorm_fp8 {Ms}x{sc.width}", xs.numel() * 3 + sc.width * 4,
        lambda s: fk.layernorm_fp8(xs.data_ptr(), ws_.data_ptr(), bs_.data_ptr(), os8.data_ptr(),
                                   s1.data_ptr(), Ms, sc.width, eps, s),
        lambda: q8(F.layer_norm(xs, (sc.width,), ws_, bs_, eps), s1))
    xe = torch.randn(T, e.width, device=dev).bfloat16()
    ye = torch.randn(T, e.width, device=dev).bfloat16()
    mod = torch.randn(1, 3 * e.width, device=dev)
    oe8 = torch.empty(T, e.width, device=dev, dtype=torch.float8_e4m3fn)
    add(f"gated_residual_adarms_fp8 {T}x{e.width}", xe.numel() * 7 + 2 * mod.numel() * 4,
        lambda s: fk.gated_residual_adarms_fp8(xe.data_ptr(), ye.data_ptr(), mod.data_ptr(),
                                               mod.data_ptr(), oe8.data_ptr(), s1.data_ptr(), T,
                                               e.width, eps, T, s))
    gu = torch.randn(Lp, 2 * p.mlp_dim, device=dev).bfloat16()
    og = torch.empty(Lp, p.mlp_dim, device=dev, dtype=torch.float8_e4m3fn)
    gu4 = gu.view(Lp, p.mlp_dim // GATE_UP_GROUP, 2, GATE_UP_GROUP)  # the engine's interleave
    add(f"geglu_fp8 {Lp}x{p.mlp_dim}", gu.numel() * 2 + og.numel(),
        lambda s: fk.geglu_fp8(gu.data_ptr(), og.data_ptr(), s1.data_ptr(), Lp, p.mlp_dim, s),
        lambda: q8(F.gelu(gu4[:, :, 0], approximate="tanh") * gu4[:, :, 1], s1))
    n = Lp * p.mlp_dim
    xq = torch.randn(n, device=dev).bfloat16()
    oq = torch.empty(n, device=dev, dtype=torch.float8_e4m3fn)
    add(f"quantize_fp8_static {n}", n * 3,
        lambda s: fk.quantize_fp8_static(xq.data_ptr(), oq.data_ptr(), s1.data_ptr(), n, s),
        lambda: q8(xq, s1))
    H, Hkv, D = p.num_heads, p.num_kv_heads, p.head_dim
    qkv = torch.randn(Lp, (H + 2 * Hkv) * D, device=dev).bfloat16()
    pos = torch.arange(Lp, device=dev, dtype=torch.int32)
    qo = torch.empty(Lp, H * D, device=dev, dtype=torch.bfloat16)
    kc = torch.empty(Lp + T, Hkv * D, device=dev, dtype=torch.bfloat16)
    vc = torch.empty_like(kc)
    add(f"rope_qkv_split {Lp} tok", qkv.numel() * 4 + Lp * 4,
        lambda s: fk.rope_qkv_split(qkv.data_ptr(), pos.data_ptr(), qo.data_ptr(), kc.data_ptr(),
                                    vc.data_ptr(), 0, Lp, H, Hkv, D, Lp + T, cfg.rope_theta,
                                    D ** -0.5, s))
    ids = torch.randint(0, p.vocab_size, (cfg.max_token_len,), device=dev, dtype=torch.int32)
    table = torch.randn(p.vocab_size, p.width, device=dev).bfloat16()
    oe = torch.empty(cfg.max_token_len, p.width, device=dev, dtype=torch.bfloat16)
    add(f"embed_gather {cfg.max_token_len}x{p.width}", oe.numel() * 4,
        lambda s: fk.embed_gather(ids.data_ptr(), table.data_ptr(), oe.data_ptr(),
                                  cfg.max_token_len, p.width, p.vocab_size,
                                  math.sqrt(p.width), s))
    img = torch.randint(0, 256, (480, 640, 3), device=dev, dtype=torch.uint8)
    P, S = sc.patch_size, sc.image_size
    kp = (3 * P * P + 15) // 16 * 16
    op = torch.empty((S // P) ** 2, kp, device=dev, dtype=torch.bfloat16)
    add("image_patches 480x640 -> 224", img.numel() + op.numel() * 2,
        lambda s: fk.image_patches(img.data_ptr(), op.data_ptr(), 480, 640, S, P, kp, s))
    na = T * cfg.action_dim
    xa = torch.randn(na, device=dev)
    va = torch.randn(na, device=dev).bfloat16()
    xa16 = torch.empty(na, device=dev, dtype=torch.bfloat16)
    add(f"euler_step {na}", na * 12,
        lambda s: fk.euler_step(xa.data_ptr(), va.data_ptr(), xa16.data_ptr(), na, -0.1, s))
    return rows


def versions():
    v = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda,
         "python": platform.python_version(), "archs": kernels.load().built_archs()}
    try:
        v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                      "--format=csv,noheader"], capture_output=True,
                                     text=True).stdout.strip()
    except OSError:
        pass
    return v


def fmt(x, d=1):
    return "n/a" if x is None else f"{x:.{d}f}"


def markdown(res):
    dev, day = res["device"], res["date"]
    out = [f"Device: {dev}, {day}; torch {res['versions']['torch']}, CUDA {res['versions']['cuda_runtime']}, "
           f"driver {res['versions'].get('driver', '?')}. GPU time per call, p50 (p99) in us, from "
           "CUDA-graph replays (bench/kernels.py)."]
    if "gemm" in res:
        out += ["", "| GEMM | M | N | K | ours FP8 us | TFLOP/s | % FP8 peak | _scaled_mm us | bf16 matmul us | tuned vs heuristic us |",
                "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res.get("gemm", []):
        sm = r["torch_scaled_mm"]
        out.append(f"| {r['name']} | {r['M']} | {r['N']} | {r['K']} | {fmt(r['ours_fp8']['p50_us'], 2)} "
                   f"({fmt(r['ours_fp8']['p99_us'], 2)}) | {fmt(r['ours_tflops'])} | "
                   f"{fmt(r['ours_pct_fp8_peak'])} | {fmt(sm['p50_us'] if sm else None, 2)}"
                   f"{' *' if r['note'] else ''} | {fmt(r['torch_bf16']['p50_us'], 2)} | "
                   f"{fmt(r['autotune']['best_us'], 2)} / {fmt(r['autotune']['heuristic_us'], 2)} |")
    notes = sorted({r["note"] for r in res.get("gemm", []) if r["note"]})
    out += [f"\n\\* {n}" for n in notes]
    legacy = "legacy" in res.get("attn_impls", [])[1:]
    if "attention" in res:
        out += ["", "| attention | ours us | TFLOP/s | SDPA us | SDPA TFLOP/s |"
                + (" legacy kernel us |" if legacy else ""),
                "|---|---|---|---|---|" + ("---|" if legacy else "")]
    for r in res.get("attention", []):
        sd = r["sdpa"]
        lg = r.get("ours_by_impl", {}).get("legacy")
        out.append(f"| {r['name']} | {fmt(r['ours']['p50_us'], 2)} ({fmt(r['ours']['p99_us'], 2)}) | "
                   f"{fmt(r.get('ours_tflops'))} | {fmt(sd['p50_us'] if sd else None, 2)} | "
                   f"{fmt(r.get('sdpa_tflops'))} |"
                   + (f" {fmt(lg['p50_us'] if lg else None, 2)} |" if legacy else ""))
    if "elementwise" in res:
        out += ["", "| elementwise | ours us | GB/s | % HBM peak | torch eager us |",
                "|---|---|---|---|---|"]
    for r in res.get("elementwise", []):
        te = r.get("torch_eager")
        out.append(f"| {r['name']} | {fmt(r['ours']['p50_us'], 2)} ({fmt(r['ours']['p99_us'], 2)}) | "
                   f"{fmt(r['ours_gbs'])} | {fmt(r.get('ours_pct_hbm'))} | "
                   f"{fmt(te['p50_us'] if te else None, 2)} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_kernels.json")
    ap.add_argument("--md", default=None, help="also write the markdown tables here")
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--only", choices=["gemm", "attention", "elementwise"], default=None)
    ap.add_argument("--attn-impls", default="v2",
                    help="comma list of attention kernel variants (FLASH_RT_ATTN_KERNEL: v2, "
                         "legacy, v2_qsmem, v2_wg1, v2_bn32); the first is reported as 'ours'")
    args = ap.parse_args()
    args.attn_impls = [s for s in args.attn_impls.split(",") if s]
    fk = kernels.load()
    cfg = load_config("pi05", "full")
    name = torch.cuda.get_device_name()
    peak = peaks_for(name)
    res = {"device": name, "date": datetime.date.today().isoformat(), "versions": versions(),
           "peaks": peak, "inner": args.inner, "reps": args.reps, "attn_impls": args.attn_impls}
    if args.only in (None, "gemm"):
        res["gemm"] = bench_gemms(fk, cfg, args, peak)
    if args.only in (None, "attention"):
        res["attention"] = bench_attention(fk, cfg, args)
    if args.only in (None, "elementwise"):
        res["elementwise"] = bench_elementwise(fk, cfg, args, peak)
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(markdown(res))


if __name__ == "__main__":
    main()
