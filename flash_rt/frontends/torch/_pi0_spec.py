"""Pi0 weight spec shared by the hopper, thor and rtx_sm120 frontends.

SigLIP, the projector and the prefix LM are the shared PaliGemma items
(``_paligemma_spec``). Pi0's action expert is a plain Gemma stack like the prefix LM
(``(1 + w)`` RMSNorm weights folded into QKV and gate/up; the final norm's into
``action_out_proj``), and its small projections stay bf16:

- ``state_in``: ``state_proj`` (the state token);
- ``act_time_in``: ``action_time_mlp_in`` is linear over concat[action_in_proj(x), emb(t)],
  so its action half times ``action_in_proj`` is one (width, action_dim) weight, and
  ``act_time.bias`` holds, per denoising step, its action half times the
  ``action_in_proj`` bias + its time half times that step's sinusoidal embedding + its bias
  (steps, width): the time embedding depends on the step only;
- ``act_time_out``: ``action_time_mlp_out``.

Bump ``SPEC_VERSION`` whenever the conversion changes: it is part of the weight-cache key.
"""
from __future__ import annotations

import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.weight_spec import Derived, Linear, WeightSpec
from flash_rt.frontends.torch._paligemma_spec import (DEFAULT_PRECISION, EXPERT, assemble,
                                                      gemma_block)
from flash_rt.models.common.functional import flow_timesteps, sinusoidal_time_embedding
from flash_rt.models.pi0.pipeline_common import ACT_TIME_BIAS, ACT_TIME_IN

SPEC_VERSION = "pi0-2"  # 2: gate/up rows interleaved
_MLP_IN, _ACT_IN = "action_time_mlp_in", "action_in_proj"


def action_time_weight(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """(width, action_dim): action_time_mlp_in's action half @ action_in_proj."""
    w = t[f"{_ACT_IN}.weight"].shape[0]
    return t[f"{_MLP_IN}.weight"][:, :w] @ t[f"{_ACT_IN}.weight"]


def action_time_bias(cfg: ModelConfig, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """(num_steps, width): the folded GEMM's bias at each denoising step's flow time."""
    mlp_w = t[f"{_MLP_IN}.weight"]
    w = mlp_w.shape[0]
    steps = torch.tensor(flow_timesteps(cfg.num_steps), dtype=torch.float32,
                         device=mlp_w.device)
    emb = sinusoidal_time_embedding(steps, cfg.time_emb_dim, cfg.time_min_period,
                                    cfg.time_max_period)
    fixed = mlp_w[:, :w] @ t[f"{_ACT_IN}.bias"] + t[f"{_MLP_IN}.bias"]
    return emb @ mlp_w[:, w:].T + fixed


def _expert(cfg: ModelConfig) -> list:
    return [
        gemma_block("ex", EXPERT, cfg.expert.depth),
        Linear("state_in", ("state_proj.weight",), ("state_proj.bias",), fp8=False),
        Derived(f"{ACT_TIME_IN}.w", (f"{_MLP_IN}.weight", f"{_ACT_IN}.weight"),
                action_time_weight, dtype=torch.bfloat16),
        Derived(ACT_TIME_BIAS, (f"{_MLP_IN}.weight", f"{_MLP_IN}.bias", f"{_ACT_IN}.bias"),
                lambda t: action_time_bias(cfg, t), dtype=torch.bfloat16),
        Linear("act_time_out", ("action_time_mlp_out.weight",), ("action_time_mlp_out.bias",),
               fp8=False),
        Linear("act_out", ("action_out_proj.weight",), ("action_out_proj.bias",),
               fold_norm=f"{EXPERT}.norm.weight", fp8=False),
    ]


def build_spec(cfg: ModelConfig, precision: str = DEFAULT_PRECISION) -> WeightSpec:
    return assemble(cfg, precision, _expert(cfg), SPEC_VERSION)
