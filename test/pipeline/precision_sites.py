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
import torch

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


ROWWISE_GEMMS = [0, 0]  # FP8 GEMMs with row-wise activations, and without (a check)


def per_row_activations() -> None:
    """What per-token (row-wise, dynamic) FP8 activation scales would give instead of the
    static per-tensor ones: every FP8 activation the emulated kernels write is remembered
    unquantised (by its address), and an FP8 GEMM that reads it quantises each row with
    that row's own amax / 448 (weights keep their per-tensor scale). A what-if, not a
    kernel: the engine has no row-wise scales (docs/precision.md)."""
    from . import emulated_kernels as ek
    written: dict[int, torch.Tensor] = {}
    last_fp8_view = [0]
    view, q8, gemm_fp8 = ek.view, ek.q8, ek.EmulatedKernels.gemm_fp8

    def view_rec(ptr, shape, dtype):
        if dtype == ek.FP8:
            last_fp8_view[0] = ptr
        return view(ptr, shape, dtype)

    def q8_rec(x, s):  # called right after the writer's view(out, ..., FP8)
        written[last_fp8_view[0]] = x.float().flatten().clone()
        return q8(x, s)

    def gemm_rowwise(self, a, b, d, M, N, K, a_scale, b_scale, stream, **kw):
        y = written.pop(a, None)
        if y is None:
            ROWWISE_GEMMS[1] += 1
            return gemm_fp8(self, a, b, d, M, N, K, a_scale, b_scale, stream, **kw)
        ROWWISE_GEMMS[0] += 1
        rows = y[:M * K].reshape(M, K)
        s = rows.abs().amax(1, keepdim=True).clamp_min(1e-12) / ek.E4M3_MAX
        A = (rows / s).clamp(-ek.E4M3_MAX, ek.E4M3_MAX).to(ek.FP8).float() * s
        B = view(b, (N, K), ek.FP8).float() * ek.scalar(b_scale)
        self._gemm(A, B, d, M, N, kw.get("bias", 0), kw.get("c", 0),
                   kw.get("epilogue", ek.Epilogue.NONE))

    ek.view, ek.q8 = view_rec, q8_rec
    ek.EmulatedKernels.gemm_fp8 = gemm_rowwise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(PIPELINES))
    ap.add_argument("modes", help='"name:pat+pat,name2:..." (empty patterns: the default mode)')
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--ckpt-dir", default="/tmp/precision_sites")
    ap.add_argument("--act-scale", choices=("tensor", "row"), default="tensor",
                    help="row: the what-if of per-token activation scales (per_row_activations)")
    args = ap.parse_args()
    if args.act_scale == "row":
        per_row_activations()
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
              f"{em.kv_cosine(images, state):.5f} ({time.time() - t0:.0f} s)"
              + (f" row-wise GEMMs {ROWWISE_GEMMS}" if args.act_scale == "row" else ""),
              flush=True)


if __name__ == "__main__":
    main()
