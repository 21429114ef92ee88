"""Weight-spec pieces every PaliGemma flow policy shares (Pi0, Pi0.5).

The GPUs read the same checkpoint into the same buffer layout (the kernels are the same
portable ones), so one spec per model backs all its hardware frontends; a model's spec
module adds its action expert's items to the ones here and calls :func:`assemble`.

What the shared conversion does (all from the model spec):
- QKV and gate/up projections fused along N (one GEMM each), gate/up rows interleaved in
  groups of ``GATE_UP_GROUP`` (the layout the GPU kernels read, see ``paligemma_pipeline.dims``);
- Gemma ``(1 + w)`` RMSNorm weights folded into the following QKV and gate/up weights (the
  kernels then normalise without a weight);
- the SigLIP patch-embedding conv flattened to (width, 3 P P) in conv-weight order and
  zero-padded to the GEMM's K alignment, matching the ``image_patches`` kernel's columns.
"""
from __future__ import annotations

from dataclasses import replace
from fnmatch import fnmatch
from typing import Iterable

from flash_rt.configs import ModelConfig
from flash_rt.core.checkpoint import EXPERT_KEYS as EXPERT
from flash_rt.core.checkpoint import PREFIX_LM_KEYS as LM
from flash_rt.core.checkpoint import PROJECTOR_KEYS as PROJECTOR
from flash_rt.core.checkpoint import VISION_KEYS as VISION
from flash_rt.core.weight_spec import Copy, LayerBlock, Linear, WeightSpec, flatten_items
from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP

PATCH_K_ALIGN = 16  # FP8/bf16 GEMM K alignment


def patch_k(cfg: ModelConfig) -> int:
    """Columns of one patch row (3 P P) padded to the GEMM alignment."""
    k = 3 * cfg.siglip.patch_size ** 2
    return k + (-k % PATCH_K_ALIGN)


def qkv_keys(layer: str) -> tuple[str, ...]:
    return tuple(f"{layer}.self_attn.{p}_proj.weight" for p in "qkv")


def gate_up(name: str, layer: str, fold_norm: str | None = None) -> Linear:
    """A Gemma MLP's gate and up projections as one Linear, rows interleaved for the GPU
    kernels (``GATE_UP_GROUP``)."""
    return Linear(name, (f"{layer}.mlp.gate_proj.weight", f"{layer}.mlp.up_proj.weight"),
                  fold_norm=fold_norm, interleave=GATE_UP_GROUP)


def siglip_items(cfg: ModelConfig) -> list:
    L = f"{VISION}.encoder.layers.{{i}}"
    return [
        Linear("sig.patch", (f"{VISION}.embeddings.patch_embedding.weight",),
               (f"{VISION}.embeddings.patch_embedding.bias",), fp8=False, flatten=True,
               pad_k_to=PATCH_K_ALIGN),
        Copy("sig.pos", f"{VISION}.embeddings.position_embedding.weight"),
        LayerBlock((
            Copy("sig.{i}.ln1.w", f"{L}.layer_norm1.weight"),
            Copy("sig.{i}.ln1.b", f"{L}.layer_norm1.bias"),
            Linear("sig.{i}.qkv", qkv_keys(L),
                   tuple(f"{L}.self_attn.{p}_proj.bias" for p in "qkv")),
            Linear("sig.{i}.o", (f"{L}.self_attn.out_proj.weight",),
                   (f"{L}.self_attn.out_proj.bias",)),
            Copy("sig.{i}.ln2.w", f"{L}.layer_norm2.weight"),
            Copy("sig.{i}.ln2.b", f"{L}.layer_norm2.bias"),
            Linear("sig.{i}.fc1", (f"{L}.mlp.fc1.weight",), (f"{L}.mlp.fc1.bias",)),
            Linear("sig.{i}.fc2", (f"{L}.mlp.fc2.weight",), (f"{L}.mlp.fc2.bias",)),
        ), cfg.siglip.depth),
        Copy("sig.post.w", f"{VISION}.post_layernorm.weight"),
        Copy("sig.post.b", f"{VISION}.post_layernorm.bias"),
        Linear("proj", (f"{PROJECTOR}.weight",), (f"{PROJECTOR}.bias",)),
    ]


def gemma_block(name: str, root: str, depth: int,
                skip_last: Iterable[str] = ()) -> LayerBlock:
    """Plain-RMSNorm Gemma layers ``<name>.{i}.{qkv,o,gate_up,down}`` with the input and
    post-attention norms folded in; ``skip_last``: site names the last layer does not need."""
    L = f"{root}.layers.{{i}}"
    n = f"{name}.{{i}}"
    return LayerBlock((
        Linear(f"{n}.qkv", qkv_keys(L), fold_norm=f"{L}.input_layernorm.weight"),
        Linear(f"{n}.o", (f"{L}.self_attn.o_proj.weight",)),
        gate_up(f"{n}.gate_up", L, fold_norm=f"{L}.post_attention_layernorm.weight"),
        Linear(f"{n}.down", (f"{L}.mlp.down_proj.weight",)),
    ), depth, skip_last=frozenset(f"{n}.{s}" for s in skip_last))


def prefix_items(cfg: ModelConfig) -> list:
    return [Copy("lm.embed", f"{LM}.embed_tokens.weight"),
            gemma_block("lm", LM, cfg.prefix.depth, skip_last=("o", "gate_up", "down"))]


def prefix_unused(cfg: ModelConfig) -> set[str]:
    """Checkpoint keys of the prefix LM that feed nothing: the last layer's o_proj and MLP
    (only its K/V are needed) and the final norm (no logits)."""
    last = cfg.prefix.depth - 1
    unused = {f"{LM}.layers.{last}.{k}" for k in (
        "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight", "post_attention_layernorm.weight")}
    unused.add(f"{LM}.norm.weight")
    return unused


# Precision modes: which Linears stay bf16 (fnmatch patterns over Linear names); the rest
# are FP8 e4m3 with static activation scales. The patch embedding and the models' small
# Linears at their two ends (action/state/time projections) are always bf16. Measured on
# the H100 with full-size random Pi0.5 weights (docs/performance.md): SigLIP is
# latency-bound, so bf16 there costs nothing and lifts the worst chunk cosine from 0.9988
# to 0.9993; a bf16 action expert adds ~1.7 ms for 0.9996.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "fp8": ("sig.*", "proj"),  # default: prefix LM + action expert FP8, vision bf16
    "fp8-all": (),  # SigLIP and the projector in FP8 too
    "fp8-bf16-expert": ("sig.*", "proj", "ex.*"),  # only the prefix LM in FP8
    "bf16": ("*",),  # no FP8 at all (diagnostics)
}
DEFAULT_PRECISION = "fp8"


def assemble(cfg: ModelConfig, precision: str, expert_items: list, version: str) -> WeightSpec:
    """SigLIP + prefix LM + the model's ``expert_items``, with ``precision``'s bf16 Linears;
    ``version`` (the model's spec version, part of the weight-cache key) gets the mode."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    items = tuple(
        replace(it, fp8=False) if isinstance(it, Linear) and any(
            fnmatch(it.name, pat) for pat in PRECISIONS[precision]) else it
        for it in flatten_items(siglip_items(cfg) + prefix_items(cfg) + expert_items))
    return WeightSpec(items=items, unused=frozenset(prefix_unused(cfg)),
                      version=f"{version}/{precision}")
