"""Which FP8 sites carry a model's chunk error: the fast path's own code on the CPU (kernel
emulation) at full widths and reduced depth, one precision mode per run, each with some
Linears kept in bf16, against the FP32 reference with the same weights, frame and noise.

A diagnostic, not a test (pytest does not collect it). From the ``test`` directory:

    python -m pipeline.precision_sites pi0 "fp8:,bf16-expert:ex.*,bf16-lm:lm.*" --depth 4

Each mode is ``name:patterns`` (``+``-separated fnmatch patterns over Linear names, added to
the default mode's bf16 set: SigLIP and the projector). The checkpoint (random weights,
``make_checkpoint``'s full preset with SigLIP at 2 layers and the prefix LM and expert at
``--depth``) is written once into ``--ckpt-dir``. ~1 minute per mode on 2 cores at depth 4.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

import flash_rt.configs as configs
import flash_rt.core.checkpoint as checkpoint
import flash_rt.tools.make_checkpoint as make_checkpoint
from flash_rt.frontends.torch import _paligemma_spec
from flash_rt.models.pi0.pipeline_hopper import PIPELINE as PI0
from flash_rt.models.pi05.pipeline_hopper import PIPELINE as PI05

from camera_frames import textured_frame  # the test directory is the working directory

from .compare import cosine
from .emulated_engine import Emulated

PIPELINES = {"pi0": PI0, "pi05": PI05}


class _Patch:
    """The ``setattr`` half of pytest's monkeypatch, which Emulated uses."""

    def setattr(self, obj, name, value):
        setattr(obj, name, value)


def reduce_depth(depth: int) -> None:
    """Make the full preset shallow everywhere it is loaded (checkpoint writer and reader)."""
    original = configs.load_config

    def load(model="pi05", preset="full", **overrides):
        cfg = original(model, preset, **overrides)
        if preset != "full" or model == configs.GROOT:
            return cfg
        return dataclasses.replace(cfg, siglip=dataclasses.replace(cfg.siglip, depth=2),
                                   prefix=dataclasses.replace(cfg.prefix, depth=depth),
                                   expert=dataclasses.replace(cfg.expert, depth=depth))

    checkpoint.load_config = load
    make_checkpoint.load_config = load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(PIPELINES))
    ap.add_argument("modes", help='"name:pat+pat,name2:..." (empty patterns: the default mode)')
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--ckpt-dir", default="/tmp/precision_sites")
    args = ap.parse_args()
    os.environ["FLASH_RT_EXPERT"] = "sequence"
    reduce_depth(args.depth)
    ckpt = Path(args.ckpt_dir) / f"{args.model}_full_depth{args.depth}"
    if not (ckpt / "model.safetensors").exists():
        make_checkpoint.make_checkpoint(ckpt, model=args.model, preset="full")
    rng = np.random.default_rng(7)
    images = [textured_frame(rng, 480, 640, 90 * v) for v in range(args.views)]
    state = np.linspace(-0.5, 0.5, 8).astype(np.float32)
    default = _paligemma_spec.PRECISIONS["fp8"]
    for mode in args.modes.split(","):
        name, patterns = mode.split(":")
        _paligemma_spec.PRECISIONS[name] = default + tuple(p for p in patterns.split("+") if p)
        t0 = time.time()
        em = Emulated(str(ckpt), PIPELINES[args.model], _Patch(), precision=name,
                      num_views=args.views, horizon=args.horizon)
        em.calibrate([(images, state, 11)])
        got = em.run(images, state, seed=5)
        want = em.reference(images, state, seed=5)
        print(f"{args.model} depth {args.depth} {name:16s} chunk {cosine(got, want):.6f} "
              f"max-abs {np.abs(got - want).max():.4f} prefix K/V "
              f"{em.kv_cosine(images, state):.5f} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
