"""The Pi0.5 compute engine: converted weights + buffers + one pipeline, no IO policy.

Separated from the frontend so the same assembly runs with the real kernels on a GPU and,
in CI, with an emulation of the kernels on the CPU (test/pipeline). The frontend adds the
staging of inputs, calibration policy and CUDA Graphs around it.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.weight_spec import E4M3_MAX
from flash_rt.frontends.torch._pi05_spec import patch_k
from flash_rt.models.pi05 import pipeline_common as pc
from flash_rt.models.pi05.expert_megakernel import ExpertMegakernel, megakernel_unsupported


class Pi05Engine:
    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor],
                 pipeline: pc.HardwarePipeline, kernels: Any, device: Any, stream: int):
        self.dims = d = pc.Pi05Dims.from_config(cfg, patch_k(cfg))
        self.weights = weights
        self.pipeline = pipeline
        self.acts = pc.Activations(d, device)
        self.scales = pc.ScaleTable(d, device)
        self.acts.t["pos"].copy_(weights["sig.pos"].repeat(d.views, 1))
        self.acts.fill_rope_table(kernels, d, stream)
        attn = pipeline.attention_backend(pc.attention_spec(d), kernels, device)
        lin = pc.linear_ptrs(weights)
        self.gemm = pc.GemmRunner(kernels, device, pipeline.tuning,
                                  pc.weights_by_shape(lin))
        self.expert_path, self.expert_note = self._choose_expert(pipeline, d, weights)
        expert = (ExpertMegakernel(d, weights, self.acts, device)
                  if self.expert_path == pc.MEGAKERNEL else None)
        self.ctx = pc.StageContext(
            k=kernels, d=d, gemm=self.gemm, quant=pc.StaticQuant(kernels, self.scales, self.acts),
            attn=attn, lin=lin,
            w={k: v.data_ptr() for k, v in weights.items()}, a=self.acts, scales=self.scales,
            inp=None, stream=stream, expert=expert)  # type: ignore[arg-type]

    @staticmethod
    def _choose_expert(pipeline: pc.HardwarePipeline, d: pc.Pi05Dims,
                       weights: dict[str, torch.Tensor]) -> tuple[str, str]:
        """(path, why): the pipeline's choice unless FLASH_RT_EXPERT overrides it; a
        megakernel the model cannot use falls back to the sequence (an explicit request
        for it is an error)."""
        requested = os.environ.get(pc.EXPERT_ENV)
        choice = requested or pipeline.expert
        if choice not in (pc.SEQUENCE, pc.MEGAKERNEL):
            raise ValueError(f"{pc.EXPERT_ENV}={choice!r}: expected {pc.SEQUENCE!r} or "
                             f"{pc.MEGAKERNEL!r}")
        if choice == pc.SEQUENCE:
            return pc.SEQUENCE, f"{pc.EXPERT_ENV}" if requested else "the pipeline's choice"
        reason = megakernel_unsupported(d, weights)
        if reason is None:
            return pc.MEGAKERNEL, "the pipeline's choice" if not requested else pc.EXPERT_ENV
        if requested:
            raise ValueError(f"{pc.EXPERT_ENV}=megakernel: {reason}")
        return pc.SEQUENCE, f"megakernel unavailable: {reason}"

    @property
    def x(self) -> torch.Tensor:
        """The Euler state: noise in, normalised actions out (float32 (H, action_dim))."""
        return self.acts.t["x"]

    def context(self, inputs: pc.InputPointers, calibrate: bool = False) -> pc.StageContext:
        ctx = replace(self.ctx, inp=inputs)
        return pc.calibrating(ctx) if calibrate else ctx

    def stages(self, ctx: pc.StageContext) -> dict[str, Any]:
        """Stage name -> zero-argument launcher (for per-stage timing)."""
        return {"siglip": lambda: pc.siglip_forward(ctx), "prefix": lambda: pc.prefix_forward(ctx),
                "denoise_step": lambda: pc.decoder_step(ctx, 0)}

    def calibrate(self, frames: Sequence[Any], run_calibrating: Callable[[Any], None],
                  percentile: float) -> None:
        """Static scale of each site = percentile over frames of its amax, / 448.

        ``run_calibrating(frame)`` stages one frame and runs the calibration twin
        (:func:`pipeline_common.calibrating`) to completion; the engine owns the amax
        bookkeeping, so the frontend and the CPU emulation calibrate the same way.
        """
        if not frames:
            raise ValueError("calibration needs at least one observation")
        per_frame = []
        for frame in frames:
            self.scales.amax.zero_()
            run_calibrating(frame)
            per_frame.append(self.scales.amax.clone())
        amax = torch.stack(per_frame)
        if not bool(torch.isfinite(amax).all()):
            bad = torch.nonzero(~torch.isfinite(amax).all(0)).flatten().tolist()[:5]
            raise RuntimeError("calibration saw NaN/inf activations at "
                               f"{[self.scales.names[i] for i in bad]}")
        chosen = torch.quantile(amax, percentile / 100.0, dim=0) if amax.shape[0] > 1 else amax[0]
        self.scales.scales.copy_(chosen.clamp_min(1e-8) / E4M3_MAX)
