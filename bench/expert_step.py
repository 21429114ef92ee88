"""One denoising step of the Pi0.5 action expert: the persistent kernel vs the kernel
sequence, on identical random inputs (flash_rt.tools.expert_testbed), as JSON.

    python bench/expert_step.py --configs full:2:50 full:1:10 full:3:10 --iters 200 --out r.json

A config is preset:views:horizon. For each: agreement of every output of the step
(cosine, max-abs) and the device time of one step as a CUDA Graph replay (p50 / p99 over
``--iters`` replays, CUDA events), for the sequence (cuBLASLt autotuned the pipeline's way)
and the megakernel; plus the fraction of HBM bandwidth the megakernel's weight stream
reaches (expert FP8 weight bytes / step time, against ``--hbm-tbps``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np
import torch

import flash_rt
from flash_rt import kernels
from flash_rt.configs import load_config
from flash_rt.tools.expert_testbed import ExpertTestbed, drift_allowed


def pct(v) -> dict:
    a = np.asarray(v, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": int(a.size)}


def replay_us(tb: ExpertTestbed, launch, iters: int) -> dict:
    """Device time of one call as a graph replay (the state is not restored between
    replays: the work per call does not depend on the values)."""
    g = tb.capture_graph(launch)
    s = tb.torch_stream
    with torch.cuda.stream(s):
        for _ in range(10):
            g.replay()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(s)
            g.replay()
            b.record(s)
            b.synchronize()
            times.append(a.elapsed_time(b) * 1000.0)
    return pct(times)


def agreement(got: dict, want: dict) -> dict:
    out = {}
    for k in want:
        a, b = got[k].flatten().double(), want[k].flatten().double()
        out[k] = {"cosine": float(torch.nn.functional.cosine_similarity(a, b, 0)),
                  "max_abs": float((a - b).abs().max()), "ref_max": float(b.abs().max())}
    return out


def compare(tb: ExpertTestbed, step: int) -> tuple[dict, dict]:
    """(megakernel vs sequence, sequence with the flash decoder attention vs the GEMM one:
    how far two correct roundings of the same step drift apart over the layers)."""
    want, got, alt = tb.outputs_three_ways(step)
    return agreement(got, want), agreement(alt, want)


def run_config(spec: str, fk, iters: int, hbm_tbps: float, depth: int | None,
               model: str = "pi05", kernel_only: bool = False) -> dict:
    preset, views, horizon = spec.split(":")
    cfg = load_config(model, preset, num_views=int(views), horizon=int(horizon))
    if depth:
        cfg = dataclasses.replace(cfg, prefix=dataclasses.replace(cfg.prefix, depth=depth),
                                  expert=dataclasses.replace(cfg.expert, depth=depth))
    t0 = time.perf_counter()
    tb = ExpertTestbed(cfg, fk)
    build_s = time.perf_counter() - t0
    step = 0
    tb.calibrate([step])
    tb.ctx.gemm.tuning = not kernel_only  # the sequence's GEMMs autotuned as the pipeline does
    tb.run_sequence(step)
    tb.ctx.gemm.tuning = False
    torch.cuda.synchronize()
    res = {"config": spec, "depth": cfg.expert.depth, "cache_rows": tb.d.cache_rows,
           "blocks": tb.mk.schedule.blocks, "tasks": int(tb.mk.tables["tasks"].shape[0]),
           "splitk_scale": tb.mk.dims.splitk_scale,
           "grouped_deps": tb.mk.dims.grouped_deps,
           "weight_bytes": int(tb.mk.wpack.numel()), "build_s": build_s,
           "precision": None}
    res["precision"], res["sequence_flash_vs_gemm"] = compare(tb, step)
    # per output: does the kernel keep the kernel tests' drift bound against the sequence
    res["within_drift"] = {k: 1.0 - v["cosine"] <= drift_allowed(
        res["sequence_flash_vs_gemm"][k]["cosine"]) for k, v in res["precision"].items()}
    tb.restore()
    if not kernel_only:
        res["sequence_us"] = replay_us(tb, lambda: tb.run_sequence(step), iters)
    tb.restore()
    res["megakernel_us"] = replay_us(tb, lambda: tb.run_megakernel(step), iters)
    trace = tb.mk.new_trace()
    tb.restore()
    tb.mk.run(tb.ctx, step, trace=trace)
    torch.cuda.synchronize()
    res["megakernel_phases"] = tb.mk.phase_profile(trace)
    mk = res["megakernel_us"]["p50"]
    res["megakernel_hbm_fraction"] = res["weight_bytes"] / (mk * 1e-6) / (hbm_tbps * 1e12)
    if not kernel_only:
        res["speedup"] = res["sequence_us"]["p50"] / mk
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["full:2:50", "full:1:10", "full:3:10"])
    ap.add_argument("--depth", type=int, default=None, help="override the layer count")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--hbm-tbps", type=float, default=3.35, help="HBM peak for the fraction")
    ap.add_argument("--model", default="pi05", choices=["pi05", "pi0"],
                    help="whose expert (pi0: RMSNorm, plain residuals, its state row as prefix)")
    ap.add_argument("--kernel-only", action="store_true",
                    help="time only the kernel (an A/B of a kernel build switch: the sequence "
                         "is the same in both builds); its agreement is still checked")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    fk = kernels.load()
    props = torch.cuda.get_device_properties(0)
    out = {"device": props.name, "sms": props.multi_processor_count,
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(),
           "flash_rt": getattr(flash_rt, "__version__", "dev"), "built_archs": fk.built_archs(),
           "model": args.model,
           "results": []}
    for spec in args.configs:
        try:
            out["results"].append(run_config(spec, fk, args.iters, args.hbm_tbps, args.depth,
                                             args.model, args.kernel_only))
        except Exception as exc:  # report and go on: one device call runs every config
            out["results"].append({"config": spec, "error": f"{type(exc).__name__}: {exc}"})
        r = out["results"][-1]
        if "error" in r:
            print(f"{spec}: ERROR {r['error']}", flush=True)
        else:
            prec = " ".join(f"{k}={v['cosine']:.6f}/{v['max_abs']:.3g}" for k, v in r["precision"].items())
            prec += " | flash-vs-gemm sequence: " + " ".join(
                f"{k}={v['cosine']:.6f}" for k, v in r["sequence_flash_vs_gemm"].items())
            seq = (f"sequence {r['sequence_us']['p50']:.1f} us, " if "sequence_us" in r else "")
            x = f"x{r['speedup']:.2f}, " if "speedup" in r else ""
            print(f"{spec} depth {r['depth']}: {seq}megakernel {r['megakernel_us']['p50']:.1f} us "
                  f"({x}HBM {100 * r['megakernel_hbm_fraction']:.0f} %) | {prec}", flush=True)
            for kind, v in r["megakernel_phases"].items():
                print(f"    {kind}: {v}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
