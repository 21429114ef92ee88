"""The compute engine of a PaliGemma flow policy (Pi0, Pi0.5): converted weights +
buffers + one hardware pipeline, no IO policy.

Separated from the frontend so the same assembly runs with the real kernels on a GPU and,
in CI, with an emulation of the kernels on the CPU (test/pipeline). The frontend adds the
staging of inputs, calibration policy and CUDA Graphs around it. What is model-specific
(attention sites, scale sites, the inference, the persistent expert kernel) comes from the
pipeline's ``ModelStages``.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.weight_spec import E4M3_MAX
from flash_rt.frontends.torch._paligemma_spec import patch_k
from flash_rt.models.common import paligemma_pipeline as pp


class PaliGemmaEngine:
    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor],
                 pipeline: pp.HardwarePipeline, kernels: Any, device: Any, stream: int):
        model = pipeline.model
        if cfg.model != model.model:
            raise ValueError(f"a {model.model} pipeline cannot run a {cfg.model} config")
        self.dims = d = pp.PaliGemmaDims.from_config(cfg, patch_k(cfg))
        self.weights = weights
        self.pipeline = pipeline
        # process-wide, read by every launch (and so by every graph captured from now on)
        kernels.set_programmatic_launch(pipeline.wants_programmatic_launch())
        self.acts = pp.Activations(d, device)
        self.scales = pp.ScaleTable(model.scale_sites(d), device)
        self.acts.t["pos"].copy_(weights["sig.pos"].repeat(d.views, 1))
        self.acts.fill_rope_table(kernels, d, stream)
        attn = pipeline.attention_backend(model.attention_spec(d), kernels, device)
        lin = pp.linear_ptrs(weights)
        self.gemm = pp.GemmRunner(kernels, device, pipeline.tuning,
                                  pp.weights_by_shape(lin))
        self.expert_path, self.expert_note = self._choose_expert(pipeline, d, weights)
        expert = (model.megakernel(d, weights, self.acts, device, kernels=kernels)
                  if self.expert_path == pp.MEGAKERNEL else None)
        self.ctx = pp.StageContext(
            k=kernels, d=d, gemm=self.gemm, quant=pp.StaticQuant(kernels, self.scales, self.acts),
            attn=attn, lin=lin,
            w={k: v.data_ptr() for k, v in weights.items()}, a=self.acts, scales=self.scales,
            inp=None, stream=stream, expert=expert)  # type: ignore[arg-type]

    @staticmethod
    def _choose_expert(pipeline: pp.HardwarePipeline, d: pp.PaliGemmaDims,
                       weights: dict[str, torch.Tensor]) -> tuple[str, str]:
        """(path, why): the pipeline's choice (by horizon, see megakernel_max_horizon) unless
        FLASH_RT_EXPERT overrides it; a megakernel the model cannot use falls back to the
        sequence (an explicit request for it is an error)."""
        requested = os.environ.get(pp.EXPERT_ENV)
        choice = requested or pipeline.expert
        if choice not in (pp.SEQUENCE, pp.MEGAKERNEL):
            raise ValueError(f"{pp.EXPERT_ENV}={choice!r}: expected {pp.SEQUENCE!r} or "
                             f"{pp.MEGAKERNEL!r}")
        if choice == pp.SEQUENCE:
            return pp.SEQUENCE, f"{pp.EXPERT_ENV}" if requested else "the pipeline's choice"
        limit = pipeline.megakernel_max_horizon
        if not requested and limit is not None and d.horizon > limit:
            return pp.SEQUENCE, (f"the pipeline's choice for horizon {d.horizon} (the megakernel "
                                 f"only up to {limit}, where it measured faster)")
        reason = pipeline.model.megakernel_unsupported(d, weights)
        if reason is None:
            return pp.MEGAKERNEL, "the pipeline's choice" if not requested else pp.EXPERT_ENV
        if requested:
            raise ValueError(f"{pp.EXPERT_ENV}=megakernel: {reason}")
        return pp.SEQUENCE, f"megakernel unavailable: {reason}"

    @property
    def x(self) -> torch.Tensor:
        """The Euler state: noise in, normalised actions out (float32 (H, action_dim))."""
        return self.acts.t["x"]

    def context(self, inputs: pp.InputPointers, calibrate: bool = False) -> pp.StageContext:
        ctx = replace(self.ctx, inp=inputs)
        return pp.calibrating(ctx) if calibrate else ctx

    def infer(self, ctx: pp.StageContext) -> None:
        """The whole inference: staged inputs -> normalised actions in ``x``."""
        self.pipeline.model.infer(ctx)

    def stages(self, ctx: pp.StageContext) -> dict[str, Callable[[], None]]:
        """Stage name -> zero-argument launcher (for per-stage timing)."""
        return self.pipeline.model.stages(ctx)

    def calibrate(self, frames: Sequence[Any], run_calibrating: Callable[[Any], None],
                  percentile: float) -> None:
        """Static scale of each site = percentile over frames of its amax, / 448.

        ``run_calibrating(frame)`` stages one frame and runs the calibration twin
        (``paligemma_pipeline.calibrating``) to completion; the engine owns the amax
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
