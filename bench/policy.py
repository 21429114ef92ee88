"""Fast-path latency of the PaliGemma policies (Pi0.5, Pi0) on a GPU, with the project's
own bf16 torch baselines, as JSON.

    python bench/policy.py --models pi05 pi0 --ckpt pi05=/data/pi05_full pi0=/data/pi0_full \
        --views 2 --horizon 50 --steps 10 --iters 200 --baselines eager,compile --out result.json

Reports (milliseconds), per model and configuration: p50/p95/p99 of CUDA Graph replay
(device time, CUDA events) and of end-to-end ``predict`` (host prep + H2D copies + replay
+ readback, wall clock); a per-stage breakdown (SigLIP, prefix, Pi0's state token, one
denoising step, each replayed as its own graph); and the same model as the bf16 torch
reference, eager and ``torch.compile``-d per layer, with the same inputs. Several
``--views``/``--horizon`` values run as separate configurations; several ``--models`` run
in the same process one after the other, so their numbers come from the same device state.
``--profile`` adds a kernel-level breakdown per stage (CUPTI through torch.profiler): the
span of each graph, the sum of its kernel times (the difference is launch gaps), the
launch count and the kernels grouped by name.
A model without ``--ckpt`` gets a random full-size checkpoint (13.4 GB of disk each).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import flash_rt
from flash_rt import kernels, load_model
from flash_rt.configs import MODELS
from flash_rt.core.checkpoint import open_checkpoint
from flash_rt.tools.make_checkpoint import make_checkpoint


def pct(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
            "p99": float(np.percentile(v, 99)), "mean": float(v.mean()), "n": int(v.size)}


def camera_frames(views: int, h: int = 480, w: int = 640) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for v in range(views):
        base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy + 60 * v) % 256], -1)
        out.append(np.clip(base + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8))
    return out


def token_ids(n: int, vocab: int) -> list[int]:
    return [1 + (7 * i) % (min(vocab, 32000) - 1) for i in range(n)]


def robot_state(m) -> np.ndarray:
    """A raw robot state of the checkpoint's length (Pi0 feeds it to its state token; Pi0.5
    with token ids does not read it)."""
    return np.linspace(-0.5, 0.5, m.processor.state_dims).astype(np.float32)


def bench_fast(m, images, ids, iters: int, profile: bool = False) -> dict:
    state = robot_state(m)
    for s in range(3):  # calibration + capture + warm-up
        m.predict(images, state, token_ids=ids, seed=s)
    wall = []
    for s in range(iters):
        t0 = time.perf_counter()
        m.predict(images, state, token_ids=ids, seed=s)
        wall.append((time.perf_counter() - t0) * 1e3)
    stages = {k: pct(v) for k, v in m.stage_ms(max(iters // 4, 10)).items()}
    out = {"replay_ms": pct(m.replay_ms(iters)), "predict_ms": pct(wall), "stages_ms": stages}
    if profile:
        out["profile"] = profile_stages(m)
    return out


def profile_stages(m, replays: int = 5) -> dict:
    """Kernel timeline of each stage graph (and the whole inference) from a CUPTI trace."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for name, replay in m.stage_graphs().items():
        replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(replays):
                replay()
            torch.cuda.synchronize()
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(trace))
            events = sorted((e for e in json.loads(trace.read_text())["traceEvents"]
                             if e.get("cat") == "kernel"), key=lambda e: e["ts"])
        out[name] = _kernel_summary(events, replays)
    return out


def _kernel_summary(events: list[dict], replays: int) -> dict:
    if not events:
        return {"kernels_per_replay": 0}
    by_name: dict[str, list[float]] = defaultdict(list)
    for e in events:
        by_name[e["name"][:120]].append(e["dur"])
    span = events[-1]["ts"] + events[-1]["dur"] - events[0]["ts"]
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:40]
    return {"span_us_per_replay": span / replays,
            "kernel_us_per_replay": sum(e["dur"] for e in events) / replays,
            "kernels_per_replay": len(events) / replays,
            "by_name": [{"name": n, "calls_per_replay": len(v) / replays,
                         "us_per_replay": sum(v) / replays, "us_mean": sum(v) / len(v)}
                        for n, v in top]}


def _compile_layers(ref) -> None:
    """torch.compile each transformer layer (one compiled graph shared by every layer)."""
    torch._dynamo.config.cache_size_limit = 64
    inner = ref.paligemma_with_expert
    towers = [inner.paligemma.model.vision_tower.vision_model.encoder.layers,
              inner.paligemma.model.language_model.layers, inner.gemma_expert.model.layers]
    for layers in towers:
        for layer in layers:
            layer.compile()


def bench_torch(ckpt, cfg_kw: dict, images, ids, iters: int, compiled: bool) -> dict:
    m = load_model(ckpt, hardware="cpu", **cfg_kw).to("cuda", torch.bfloat16)
    ref = m.reference  # the reference module itself (timed without host pre/post-processing)
    obs = m.processor.prepare(images, robot_state(m), token_ids=ids)
    args = [t.cuda() for t in (obs.pixels, obs.view_mask, obs.tokens, obs.token_mask)]
    noise = m.make_noise(None, 0)[0].cuda()
    state = obs.state.cuda()
    if compiled:
        _compile_layers(ref)
    t0 = time.perf_counter()
    ref.sample_actions(*args, noise, state=state)
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    for _ in range(2):
        ref.sample_actions(*args, noise, state=state)
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        ref.sample_actions(*args, noise, state=state)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    del ref, m
    torch.cuda.empty_cache()
    return {"ms": pct(times), "first_call_s": first_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["pi05"], choices=MODELS)
    ap.add_argument("--ckpt", nargs="+", default=[], metavar="MODEL=DIR",
                    help="checkpoint per model (a bare DIR applies to the only model)")
    ap.add_argument("--hardware", default="auto")
    ap.add_argument("--views", type=int, nargs="+", default=[2])
    ap.add_argument("--horizon", type=int, nargs="+", default=[50])
    ap.add_argument("--precision", nargs="+", default=["fp8"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompt-len", type=int, default=None,
                    help="text tokens (default: the model's max_token_len, 200 / 48)")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--baseline-iters", type=int, default=20)
    ap.add_argument("--baselines", default="eager,compile",
                    help="comma list of eager,compile (bf16 torch reference); '' for none")
    ap.add_argument("--skip-fast", action="store_true", help="only the torch baselines")
    ap.add_argument("--profile", action="store_true",
                    help="add a per-kernel breakdown of each stage (torch.profiler/CUPTI)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ckpts = checkpoint_args(args.ckpt, args.models)
    tmp = tempfile.TemporaryDirectory()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "flash_rt": flash_rt.__version__,
              "kernel_archs": kernels.load().built_archs(), "python": platform.python_version(),
              "steps": args.steps, "configs": []}
    baselines = [b for b in args.baselines.split(",") if b]
    for model in args.models:
        ckpt = ckpts.get(model) or str(make_checkpoint(Path(tmp.name) / model, model, "full",
                                                       seed=0))
        cfg = open_checkpoint(ckpt, model).config
        prompt_len = args.prompt_len or cfg.max_token_len
        for views in args.views:
            for horizon in args.horizon:
                cfg_kw = dict(model=model, num_views=views, horizon=horizon,
                              num_steps=args.steps, max_token_len=prompt_len)
                images = camera_frames(views)
                ids = token_ids(prompt_len, cfg.prefix.vocab_size)
                row = {"model": model, "views": views, "horizon": horizon,
                       "prompt_len": prompt_len}
                result["configs"].append(row)
                for precision in ([] if args.skip_fast else args.precision):
                    torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                    m = load_model(ckpt, hardware=args.hardware, precision=precision, **cfg_kw)
                    load_s = time.perf_counter() - t0
                    row[precision] = {"hardware": m.hardware, "load_s": load_s,
                                      **bench_fast(m, images, ids, args.iters, args.profile),
                                      "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30}
                    del m
                    torch.cuda.empty_cache()
                    save(result, args.out)
                for b in baselines:
                    row[f"torch_bf16_{b}"] = bench_torch(ckpt, cfg_kw, images, ids,
                                                         args.baseline_iters, b == "compile")
                    save(result, args.out)
                print(json.dumps(row), flush=True)
    result["replay_p50_ratio_pi0_over_pi05"] = replay_ratios(result["configs"], args.precision)
    save(result, args.out)
    print(json.dumps(result, indent=2))


def replay_ratios(rows: list[dict], precisions: list[str]) -> dict[str, float]:
    """"<precision>/<views>x<horizon>" -> Pi0's replay p50 / Pi0.5's (same run, same device)."""
    by = {(r["model"], r["views"], r["horizon"]): r for r in rows}
    out = {}
    for (model, v, h), row in by.items():
        other = by.get(("pi05", v, h))
        if model != "pi0" or other is None:
            continue
        for p in precisions:
            if p in row and p in other:
                out[f"{p}/{v}x{h}"] = (row[p]["replay_ms"]["p50"] /
                                       other[p]["replay_ms"]["p50"])
    return out


def checkpoint_args(values: list[str], models: list[str]) -> dict[str, str]:
    """``MODEL=DIR`` pairs (or one bare DIR for a single model) -> model -> directory."""
    out = {}
    for v in values:
        model, sep, path = v.partition("=")
        if not sep:
            if len(models) != 1:
                raise SystemExit(f"--ckpt {v}: name the model (MODEL=DIR) with several --models")
            model, path = models[0], v
        if model not in models:
            raise SystemExit(f"--ckpt {v}: {model!r} is not in --models {models}")
        out[model] = path
    return out


def save(result: dict, out) -> None:
    """Written after every measurement, so a run cut short keeps what it measured."""
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
