"""CPU latency and peak RAM of the FP32 reference (cpu frontend), as JSON.

    python bench/reference_cpu.py --model pi05 --preset tiny --iters 20
    python bench/reference_cpu.py --model pi05 --preset full --iters 1 --ckpt /data/pi05_full
    python bench/reference_cpu.py --model groot --preset full --iters 2 --ckpt /data/groot_full

Generates a checkpoint when --ckpt is not given (full size: 13.4 GB of disk).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time

import numpy as np
import torch

import flash_rt
from flash_rt.tools.make_checkpoint import make_checkpoint


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="pi05")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--views", type=int, default=2, help="Pi models (GR00T: the embodiment's)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        gen_s = None
        if ckpt is None:
            t = time.perf_counter()
            ckpt = make_checkpoint(tmp, args.model, args.preset)
            gen_s = time.perf_counter() - t
        t = time.perf_counter()
        views = None if args.model == "groot" else args.views
        policy = flash_rt.load_model(ckpt, model=args.model, hardware="cpu", num_views=views)
        load_s = time.perf_counter() - t
        rss_after_load = peak_rss_gib()
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
                  for _ in range(policy.processor.num_views)]
        state = rng.normal(0, 0.3, policy.processor.state_dims).astype(np.float32)
        for _ in range(args.warmup):
            policy.predict(images, state, prompt="pick up the red block", seed=0)
        lat = [policy.predict(images, state, prompt="pick up the red block", seed=i).latency_ms
               for i in range(args.iters)]
    print(json.dumps({
        "bench": "reference_cpu", "model": args.model, "preset": args.preset,
        "views": policy.processor.num_views, "horizon": policy.config.horizon,
        "steps": policy.config.num_steps, "iters": args.iters,
        "device": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "generate_s": gen_s, "load_s": load_s,
        "peak_rss_gib_after_load": rss_after_load, "peak_rss_gib": peak_rss_gib(),
        "predict_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                       "mean": float(np.mean(lat)), "min": float(np.min(lat))},
    }, indent=1))


if __name__ == "__main__":
    main()
