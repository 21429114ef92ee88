"""Pi0.5 weight spec shared by the hopper, thor and rtx_sm120 frontends.

The three GPUs read the same checkpoint into the same buffer layout (the kernels are the
same portable ones), so one spec backs all of them. Bump ``SPEC_VERSION`` whenever the
conversion changes: it is part of the weight-cache key.

What the conversion does (all from the model spec):
- QKV and gate/up projections fused along N (one GEMM each);
- the prefix LM's Gemma ``(1 + w)`` RMSNorm weights folded into the following QKV and
  gate/up weights (the kernels then normalise without a weight);
- every adaRMS modulation of the action expert precomputed per denoising step: the
  condition depends on the flow time only, so ``dense(time_mlp(t_k))`` for each layer and
  step is a float32 table (steps, 2 * depth + 1, 3 * width) of [scale | shift | gate];
- the SigLIP patch-embedding conv flattened to (width, 3 P P) in conv-weight order and
  zero-padded to the GEMM's K alignment, matching the ``image_patches`` kernel's columns.
"""
from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatch

import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.checkpoint import EXPERT_KEYS as _EX
from flash_rt.core.checkpoint import PREFIX_LM_KEYS as _LM
from flash_rt.core.checkpoint import PROJECTOR_KEYS as _PROJ
from flash_rt.core.checkpoint import VISION_KEYS as _VIS
from flash_rt.core.weight_spec import Copy, Derived, LayerBlock, Linear, WeightSpec, flatten_items
from flash_rt.models.common.flow_policy import swish
from flash_rt.models.common.functional import flow_timesteps, sinusoidal_time_embedding

SPEC_VERSION = "pi05-2"
PATCH_K_ALIGN = 16  # FP8/bf16 GEMM K alignment



def patch_k(cfg: ModelConfig) -> int:
    """Columns of one patch row (3 P P) padded to the GEMM alignment."""
    k = 3 * cfg.siglip.patch_size ** 2
    return k + (-k % PATCH_K_ALIGN)


def _qkv(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.self_attn.{p}_proj.weight" for p in "qkv")


def _siglip(cfg: ModelConfig) -> list:
    L = f"{_VIS}.encoder.layers.{{i}}"
    return [
        Linear("sig.patch", (f"{_VIS}.embeddings.patch_embedding.weight",),
               (f"{_VIS}.embeddings.patch_embedding.bias",), fp8=False, flatten=True,
               pad_k_to=PATCH_K_ALIGN),
        Copy("sig.pos", f"{_VIS}.embeddings.position_embedding.weight"),
        LayerBlock((
            Copy("sig.{i}.ln1.w", f"{L}.layer_norm1.weight"),
            Copy("sig.{i}.ln1.b", f"{L}.layer_norm1.bias"),
            Linear("sig.{i}.qkv", _qkv(L), tuple(f"{L}.self_attn.{p}_proj.bias" for p in "qkv")),
            Linear("sig.{i}.o", (f"{L}.self_attn.out_proj.weight",),
                   (f"{L}.self_attn.out_proj.bias",)),
            Copy("sig.{i}.ln2.w", f"{L}.layer_norm2.weight"),
            Copy("sig.{i}.ln2.b", f"{L}.layer_norm2.bias"),
            Linear("sig.{i}.fc1", (f"{L}.mlp.fc1.weight",), (f"{L}.mlp.fc1.bias",)),
            Linear("sig.{i}.fc2", (f"{L}.mlp.fc2.weight",), (f"{L}.mlp.fc2.bias",)),
        ), cfg.siglip.depth),
        Copy("sig.post.w", f"{_VIS}.post_layernorm.weight"),
        Copy("sig.post.b", f"{_VIS}.post_layernorm.bias"),
        Linear("proj", (f"{_PROJ}.weight",), (f"{_PROJ}.bias",)),
    ]


def _prefix(cfg: ModelConfig) -> list:
    L = f"{_LM}.layers.{{i}}"
    return [
        Copy("lm.embed", f"{_LM}.embed_tokens.weight"),
        LayerBlock((
            Linear("lm.{i}.qkv", _qkv(L), fold_norm=f"{L}.input_layernorm.weight"),
            Linear("lm.{i}.o", (f"{L}.self_attn.o_proj.weight",)),
            Linear("lm.{i}.gate_up", (f"{L}.mlp.gate_proj.weight", f"{L}.mlp.up_proj.weight"),
                   fold_norm=f"{L}.post_attention_layernorm.weight"),
            Linear("lm.{i}.down", (f"{L}.mlp.down_proj.weight",)),
        ), cfg.prefix.depth, skip_last=frozenset({"lm.{i}.o", "lm.{i}.gate_up", "lm.{i}.down"})),
    ]


def _mod_inputs(cfg: ModelConfig) -> tuple[str, ...]:
    norms = [f"{_EX}.layers.{i}.{n}.dense.{p}" for i in range(cfg.expert.depth)
             for n in ("input_layernorm", "post_attention_layernorm") for p in ("weight", "bias")]
    return tuple(norms + [f"{_EX}.norm.dense.weight", f"{_EX}.norm.dense.bias"] +
                 [f"time_mlp_{s}.{p}" for s in ("in", "out") for p in ("weight", "bias")])


def adarms_tables(cfg: ModelConfig, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """(num_steps, 2 * depth + 1, 3 * width) float32: row 2l = layer l's input norm, 2l+1
    its post-attention norm, 2*depth the final norm; columns [scale | shift | gate]."""
    steps = torch.tensor(flow_timesteps(cfg.num_steps), dtype=torch.float32,
                         device=t[f"{_EX}.norm.dense.weight"].device)
    emb = sinusoidal_time_embedding(steps, cfg.time_emb_dim, cfg.time_min_period,
                                    cfg.time_max_period)
    lin = torch.nn.functional.linear
    cond = swish(lin(swish(lin(emb, t["time_mlp_in.weight"], t["time_mlp_in.bias"])),
                     t["time_mlp_out.weight"], t["time_mlp_out.bias"]))
    names = [f"{_EX}.layers.{i}.{n}" for i in range(cfg.expert.depth)
             for n in ("input_layernorm", "post_attention_layernorm")] + [f"{_EX}.norm"]
    return torch.stack([lin(cond, t[f"{n}.dense.weight"], t[f"{n}.dense.bias"]) for n in names],
                       dim=1)


def _expert(cfg: ModelConfig) -> list:
    L = f"{_EX}.layers.{{i}}"
    return [
        LayerBlock((
            Linear("ex.{i}.qkv", _qkv(L)),
            Linear("ex.{i}.o", (f"{L}.self_attn.o_proj.weight",)),
            Linear("ex.{i}.gate_up", (f"{L}.mlp.gate_proj.weight", f"{L}.mlp.up_proj.weight")),
            Linear("ex.{i}.down", (f"{L}.mlp.down_proj.weight",)),
        ), cfg.expert.depth),
        Linear("act_in", ("action_in_proj.weight",), ("action_in_proj.bias",), fp8=False),
        Linear("act_out", ("action_out_proj.weight",), ("action_out_proj.bias",), fp8=False),
        Derived("ex.mod", _mod_inputs(cfg), lambda t: adarms_tables(cfg, t)),
    ]


# Precision modes: which Linears stay bf16 (fnmatch patterns over Linear names); the rest
# are FP8 e4m3 with static activation scales. The patch embedding and the action in/out
# projections are always bf16 (tiny, and at the model's two ends). Measured on the H100
# with full-size random weights (docs/performance.md): SigLIP is latency-bound, so bf16
# there costs nothing and lifts the worst chunk cosine from 0.9988 to 0.9993; a bf16
# action expert adds ~1.7 ms for 0.9996.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "fp8": ("sig.*", "proj"),  # default: prefix LM + action expert FP8, vision bf16
    "fp8-all": (),  # SigLIP and the projector in FP8 too
    "fp8-bf16-expert": ("sig.*", "proj", "ex.*"),  # only the prefix LM in FP8
    "bf16": ("*",),  # no FP8 at all (diagnostics)
}
DEFAULT_PRECISION = "fp8"


def build_spec(cfg: ModelConfig, precision: str = DEFAULT_PRECISION) -> WeightSpec:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    last = cfg.prefix.depth - 1
    unused = {f"{_LM}.layers.{last}.{k}" for k in (
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight", "post_attention_layernorm.weight")}
    unused.add(f"{_LM}.norm.weight")  # the prefix's final norm feeds no logits here
    items = tuple(
        replace(it, fp8=False) if isinstance(it, Linear) and any(
            fnmatch(it.name, pat) for pat in PRECISIONS[precision]) else it
        for it in flatten_items(_siglip(cfg) + _prefix(cfg) + _expert(cfg)))
    return WeightSpec(items=items, unused=frozenset(unused),
                      version=f"{SPEC_VERSION}/{precision}")
