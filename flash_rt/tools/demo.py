"""Main-job demo without ROS: make a tiny Pi0.5 checkpoint, predict, print chunk + latency.

    python -m flash_rt.tools.demo [--ckpt DIR] [--hardware auto] [--iters 10]
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

import flash_rt
from flash_rt.tools.make_checkpoint import make_checkpoint


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="checkpoint dir (default: generate a tiny one)")
    ap.add_argument("--model", default="pi05")
    ap.add_argument("--hardware", default="auto")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or make_checkpoint(tmp, args.model, "tiny")
        policy = flash_rt.load_model(ckpt, model=args.model, hardware=args.hardware, num_views=2)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
        state = rng.normal(0, 0.3, policy.processor.normalizer.num_state_dims)
        for i in range(args.iters):
            result = policy.predict(images, state, prompt="pick up the red block", seed=i)
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    print(f"{policy.model}/{policy.framework}/{policy.hardware} ({policy.config.preset}) "
          f"action chunk {result.actions.shape}, first 3 steps:\n{result.actions[:3]}")
    print("latency ms:", json.dumps({k: round(v, 2) for k, v in
                                     policy.get_latency_stats().items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
