"""Loading a full-size openpi JAX checkpoint through ``framework="jax"``: times and peak RSS,
as JSON.

    python bench/openpi_load.py --ckpt /data/pi05_openpi [--out result.json]

Each phase runs in a fresh process, so its peak RSS is its own:

- ``reference``: ``load_model(framework="jax", hardware="cpu")``, the FP32 reference (the
  weights stay in host memory: the bound is peak RSS <= 1.1x the checkpoint's weights);
- ``convert``: the GPU frontends' weight path, run on this CPU (no GPU needed): content
  hash of params/ + conversion into the fast path's buffers + weight-cache store (a first
  load). Its RSS includes the converted buffers, which a GPU run keeps on the device;
- ``cached``: the same with the memoised hash and the verified cache read (a second load).

Without --ckpt a random full-size checkpoint is generated first (12.5 GB of disk).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("reference", "convert", "cached")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run_phase(phase: str, ckpt: str, cache_dir: str, model: str) -> dict:
    start = time.perf_counter()
    import flash_rt

    if phase == "reference":
        flash_rt.load_model(ckpt, model=model, framework="jax", hardware="cpu")
    else:
        import torch

        from flash_rt.core.weight_cache import CacheKey, WeightCache
        from flash_rt.frontends.jax._openpi_checkpoint import open_openpi_checkpoint
        from flash_rt.frontends.torch._converted_weights import load_converted_weights
        from flash_rt.frontends.torch._pi05_spec import build_spec

        bundle = open_openpi_checkpoint(ckpt, model)
        cache = WeightCache(cache_dir)
        spec = build_spec(bundle.config)
        t0 = time.perf_counter()
        digest = bundle.content_hash(cache.directory)
        hash_s = time.perf_counter() - t0
        key = CacheKey(digest, "cpu-bench", "fp8", spec.version, "bench")
        load_converted_weights(bundle, spec, cache, key, torch.device("cpu"))
        return {"seconds": time.perf_counter() - start, "content_hash_s": hash_s,
                "peak_rss_gib": peak_rss_gib()}
    return {"seconds": time.perf_counter() - start, "peak_rss_gib": peak_rss_gib()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--model", default="pi05")
    ap.add_argument("--phase", choices=PHASES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.phase:  # child process
        print(json.dumps(run_phase(args.phase, args.ckpt, args.cache_dir, args.model)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        result: dict = {"machine": platform.platform(), "cpus": __import__("os").cpu_count(),
                        "date": time.strftime("%Y-%m-%d")}
        if ckpt is None:
            from flash_rt.tools.make_checkpoint import OPENPI, make_checkpoint

            t0 = time.perf_counter()
            ckpt = str(make_checkpoint(Path(tmp) / "ckpt", args.model, "full", fmt=OPENPI))
            result["generate_s"] = time.perf_counter() - t0
        from flash_rt.core.orbax_stream import OrbaxReader

        params = Path(ckpt) / "params"
        result["weights_gib"] = sum(leaf.nbytes for leaf in
                                    OrbaxReader(params).leaves.values()) / 2**30
        result["params_disk_gib"] = sum(p.stat().st_size for p in params.rglob("*")
                                        if p.is_file()) / 2**30
        cache_dir = str(Path(tmp) / "cache")
        for phase in PHASES:
            out = subprocess.run([sys.executable, __file__, "--phase", phase, "--ckpt", ckpt,
                                  "--model", args.model, "--cache-dir", cache_dir],
                                 check=True, stdout=subprocess.PIPE, text=True)
            result[phase] = json.loads(out.stdout.strip().splitlines()[-1])
            print(phase, result[phase], file=sys.stderr, flush=True)
        result["reference"]["rss_over_weights"] = (result["reference"]["peak_rss_gib"] /
                                                   result["weights_gib"])
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
