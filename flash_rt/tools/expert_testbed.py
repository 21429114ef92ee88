"""A random-weight Pi0.5 (or Pi0) action expert wired to the real kernels, for the expert
kernels' tests and benchmarks (test/kernels/test_expert_megakernel.py, bench/expert_step.py).

It builds what the pipeline builds for the expert (converted FP8 weights with their
scales, the adaRMS tables, the buffers, a stage context with Hopper's choices) around a
random cached prefix, calibrates the activation scales the engine's way (the calibration
twin's amax / 448), and runs one denoising step's layers either as the kernel sequence or
as the persistent kernel from the same saved state, so the two can be compared and timed
on identical inputs.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.weight_spec import E4M3_MAX, quantize_fp8
from flash_rt.frontends.torch._paligemma_spec import patch_k
from flash_rt.models.common import paligemma_pipeline as pp
from flash_rt.models.common.expert_schedule import WEIGHT_SITES
from flash_rt.models.pi0 import pipeline_common as pi0_stages
from flash_rt.models.pi05 import pipeline_common as pi05_stages
from flash_rt.models.pi05.adarms import MOD_TABLE, mod_rows
from flash_rt.models.pi05.pipeline_hopper import PIPELINE as HOPPER

# The model's stage module (scale sites, attention spec, expert_layers, its ModelStages)
STAGES = {"pi05": (pi05_stages, pi05_stages.PI05), "pi0": (pi0_stages, pi0_stages.PI0)}

STATE = ("dec_x", "k_cache", "v_cache")  # what one step reads and overwrites

# FP8 re-quantisation at every layer turns any rounding difference into a drift that grows
# with depth (random weights: ~4e-3 of cosine after 18 layers for two correct sequences).
# The kernel may drift at most DRIFT_FACTOR times as far as the sequence's own flash-vs-GEMM
# attention pair, plus DRIFT_FLOOR (one layer's rounding); a wrong index or a missed
# dependency corrupts whole rows or tiles, far beyond that.
DRIFT_FACTOR = 4.0
DRIFT_FLOOR = 1e-4


def drift_allowed(floor_cosine: float) -> float:
    """The largest 1 - cosine the persistent kernel's output may have against the sequence,
    given the sequence's own flash-vs-GEMM cosine for that output."""
    return DRIFT_FACTOR * (1.0 - floor_cosine) + DRIFT_FLOOR


def random_expert_weights(d: pp.PaliGemmaDims, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """FP8 Linears in the weight spec's layout ((N, K) e4m3 + float32 (1,) scale) with
    Linear-like init, and a well-conditioned adaRMS table (scale, shift ~ 0.1, gate ~ 0.5)."""
    W, F, D = d.ex_width, d.ex_mlp, d.head_dim
    shapes = {"qkv": ((d.heads + 2 * d.kv_heads) * D, W), "o": (W, d.q_dim),
              "gate_up": (2 * F, W), "down": (W, F)}
    out: dict[str, torch.Tensor] = {}
    for i in range(d.depth):
        for site in WEIGHT_SITES:
            n, k = shapes[site]
            w = torch.randn(n, k, generator=gen) * k ** -0.5
            out[f"ex.{i}.{site}.w"], out[f"ex.{i}.{site}.ws"] = quantize_fp8(w)
    mod = torch.randn(d.steps, mod_rows(d), 3 * W, generator=gen) * 0.1
    mod[..., 2 * W:] += 0.5
    out[MOD_TABLE] = mod
    return out


class ExpertTestbed:
    def __init__(self, cfg: ModelConfig, kernels: Any, device: Any = "cuda", *,
                 prefix_len: int | None = None, masked_keys: int = 3, seed: int = 0,
                 blocks: int | None = None):
        gen = torch.Generator().manual_seed(seed)
        self.pc, self.stages = STAGES[cfg.model]
        self.d = d = pp.PaliGemmaDims.from_config(cfg, patch_k(cfg))
        self.k = kernels
        self.weights = {k: v.to(device) for k, v in random_expert_weights(d, gen).items()}
        self.acts = pp.Activations(d, device)
        self.scales = pp.ScaleTable(self.pc.scale_sites(d), device)
        # a stream of its own: launches and graph captures (capture_graph) both go there
        self.torch_stream = torch.cuda.Stream() if torch.device(device).type == "cuda" else None
        self.stream = self.torch_stream.cuda_stream if self.torch_stream is not None else 0
        self.acts.fill_rope_table(kernels, d, self.stream)
        valid = d.prefix_len - 7 if prefix_len is None else prefix_len
        H = d.horizon
        start = valid + d.state_tokens  # Pi0: its state token's cached row comes first
        self.inputs_t = {
            "action_positions": torch.arange(start, start + H, dtype=torch.int32),
            "valid_len": torch.tensor([valid], dtype=torch.int32),
            "actions_start": torch.tensor([start], dtype=torch.int32),
            "key_mask": torch.ones(d.cache_rows, dtype=torch.uint8),
        }
        self.inputs_t["key_mask"][1:1 + masked_keys] = 0  # a few masked prefix keys
        self.inputs_t = {k: v.to(device) for k, v in self.inputs_t.items()}
        kv = (torch.randn(d.depth, d.cache_rows, d.kv_dim, generator=gen) * 2).to(torch.bfloat16)
        self.acts.t["k_cache"].copy_(kv.to(device))
        self.acts.t["v_cache"].copy_(torch.randn(kv.shape, generator=gen).to(torch.bfloat16).to(device))
        self.acts.t["dec_x"].copy_(torch.randn(H, d.ex_width, generator=gen).to(torch.bfloat16).to(device))
        inp = pp.InputPointers(images=[], tokens=0, positions=0,
                               action_positions=self.inputs_t["action_positions"].data_ptr(),
                               key_mask=self.inputs_t["key_mask"].data_ptr(),
                               valid_len=self.inputs_t["valid_len"].data_ptr(),
                               actions_start=self.inputs_t["actions_start"].data_ptr())
        lin = pp.linear_ptrs(self.weights)
        self.ctx = pp.StageContext(
            k=kernels, d=d, gemm=pp.GemmRunner(kernels, device, HOPPER.tuning),
            quant=pp.StaticQuant(kernels, self.scales, self.acts),
            attn=HOPPER.attention_backend(self.pc.attention_spec(d), kernels, device), lin=lin,
            w={k: v.data_ptr() for k, v in self.weights.items()}, a=self.acts,
            scales=self.scales, inp=inp, stream=self.stream)
        self.mk = self.stages.megakernel(d, self.weights, self.acts, device, blocks=blocks)
        self._saved = self.save()

    def save(self) -> dict[str, torch.Tensor]:
        return {n: self.acts.t[n].clone() for n in STATE}

    def restore(self, saved: dict[str, torch.Tensor] | None = None) -> None:
        self.k_sync()  # the copies (default stream) after the testbed stream's work
        for n, t in (saved or self._saved).items():
            self.acts.t[n].copy_(t)
        self.k_sync()

    def calibrate(self, steps: range | list[int]) -> None:
        """Static scales of the given steps' sites from one calibration-twin run each."""
        self.scales.amax.zero_()
        for step in steps:
            self.restore()
            self.pc.expert_layers(pp.calibrating(self.ctx), step)
        self.k_sync()
        got = self.scales.amax.clamp_min(1e-8) / E4M3_MAX
        used = self.scales.amax > 0
        self.scales.scales.copy_(torch.where(used, got, self.scales.scales))
        self.restore()

    def k_sync(self) -> None:
        if self.stream:
            torch.cuda.synchronize()

    def capture_graph(self, launch) -> "torch.cuda.CUDAGraph":
        """``launch()`` captured on the testbed's stream (where its kernels are enqueued)."""
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=self.torch_stream):
            launch()
        return g

    def run_sequence(self, step: int) -> None:
        self.pc.expert_layers(self.ctx, step)

    def run_sequence_flash_attention(self, step: int) -> None:
        """The sequence with the flash decoder attention instead of the GEMM one: a second
        correct rounding of the same step, whose drift from :meth:`run_sequence` over the
        layers is the noise floor any other implementation is judged against."""
        os.environ["FLASH_RT_DECODER_ATTN"] = "flash"
        try:
            attn = type(self.ctx.attn)(self.ctx.attn.spec, self.k, "cuda")
        finally:
            del os.environ["FLASH_RT_DECODER_ATTN"]
        self.pc.expert_layers(dataclasses.replace(self.ctx, attn=attn), step)

    def run_megakernel(self, step: int) -> None:
        self.mk.run(self.ctx, step)

    def outputs_three_ways(self, step: int) -> tuple[dict, dict, dict]:
        """(sequence, megakernel, sequence with flash attention) outputs of ``step``, each
        from the saved state; the kernel's own outputs are poisoned first (it must write
        them)."""
        self.restore()
        self.run_sequence(step)
        want = self.outputs()
        self.restore()
        for name in ("dec_xn", "dec_q"):
            self.acts.t[name].fill_(float("nan"))
        self.run_megakernel(step)
        got = self.outputs()
        self.restore()
        self.run_sequence_flash_attention(step)
        return want, got, self.outputs()

    def outputs(self) -> dict[str, torch.Tensor]:
        """What a step produces: dec_xn, dec_x, the last layer's q, every layer's K/V rows
        of the action tokens."""
        self.k_sync()
        valid = int(self.inputs_t["actions_start"][0])  # the actions' first cache row
        H = self.d.horizon
        return {"xn": self.acts.t["dec_xn"].float().clone(),
                "x": self.acts.t["dec_x"].float().clone(),
                "q": self.acts.t["dec_q"].float().clone(),
                "k_rows": self.acts.t["k_cache"][:, valid:valid + H].float().clone(),
                "v_rows": self.acts.t["v_cache"][:, valid:valid + H].float().clone()}
