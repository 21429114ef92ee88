"""Pi0.5 weight spec shared by the hopper, thor and rtx_sm120 frontends.

SigLIP, the projector and the prefix LM are the shared PaliGemma items
(``_paligemma_spec``). Pi0.5's action expert: Linears without folded norms (its norms are
adaRMS), ``action_in_proj`` / ``action_out_proj`` in bf16, and every adaRMS modulation
precomputed per denoising step: the condition depends on the flow time only, so
``dense(time_mlp(t_k))`` for each layer and step is a float32 table
(steps, 2 * depth + 1, 3 * width) of [scale | shift | gate] (layout: models/pi05/adarms.py).
Bump ``SPEC_VERSION`` whenever the conversion changes: it is part of the weight-cache key.
"""
from __future__ import annotations

import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.weight_spec import Derived, LayerBlock, Linear, WeightSpec
from flash_rt.frontends.torch._paligemma_spec import (DEFAULT_PRECISION, EXPERT, assemble,
                                                      gate_up, qkv_keys)
from flash_rt.models.common.flow_policy import swish
from flash_rt.models.common.functional import flow_timesteps, sinusoidal_time_embedding
from flash_rt.models.pi05.adarms import MOD_TABLE

SPEC_VERSION = "pi05-3"  # 3: gate/up rows interleaved


def _mod_inputs(cfg: ModelConfig) -> tuple[str, ...]:
    norms = [f"{EXPERT}.layers.{i}.{n}.dense.{p}" for i in range(cfg.expert.depth)
             for n in ("input_layernorm", "post_attention_layernorm") for p in ("weight", "bias")]
    return tuple(norms + [f"{EXPERT}.norm.dense.weight", f"{EXPERT}.norm.dense.bias"] +
                 [f"time_mlp_{s}.{p}" for s in ("in", "out") for p in ("weight", "bias")])


def adarms_tables(cfg: ModelConfig, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """(num_steps, 2 * depth + 1, 3 * width) float32: row 2l = layer l's input norm, 2l+1
    its post-attention norm, 2*depth the final norm; columns [scale | shift | gate]."""
    steps = torch.tensor(flow_timesteps(cfg.num_steps), dtype=torch.float32,
                         device=t[f"{EXPERT}.norm.dense.weight"].device)
    emb = sinusoidal_time_embedding(steps, cfg.time_emb_dim, cfg.time_min_period,
                                    cfg.time_max_period)
    lin = torch.nn.functional.linear
    cond = swish(lin(swish(lin(emb, t["time_mlp_in.weight"], t["time_mlp_in.bias"])),
                     t["time_mlp_out.weight"], t["time_mlp_out.bias"]))
    names = [f"{EXPERT}.layers.{i}.{n}" for i in range(cfg.expert.depth)
             for n in ("input_layernorm", "post_attention_layernorm")] + [f"{EXPERT}.norm"]
    return torch.stack([lin(cond, t[f"{n}.dense.weight"], t[f"{n}.dense.bias"]) for n in names],
                       dim=1)


def _expert(cfg: ModelConfig) -> list:
    L = f"{EXPERT}.layers.{{i}}"
    return [
        LayerBlock((
            Linear("ex.{i}.qkv", qkv_keys(L)),
            Linear("ex.{i}.o", (f"{L}.self_attn.o_proj.weight",)),
            gate_up("ex.{i}.gate_up", L),
            Linear("ex.{i}.down", (f"{L}.mlp.down_proj.weight",)),
        ), cfg.expert.depth),
        Linear("act_in", ("action_in_proj.weight",), ("action_in_proj.bias",), fp8=False),
        Linear("act_out", ("action_out_proj.weight",), ("action_out_proj.bias",), fp8=False),
        Derived(MOD_TABLE, _mod_inputs(cfg), lambda t: adarms_tables(cfg, t)),
    ]


def build_spec(cfg: ModelConfig, precision: str = DEFAULT_PRECISION) -> WeightSpec:
    return assemble(cfg, precision, _expert(cfg), SPEC_VERSION)
