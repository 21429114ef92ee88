"""openpi's JAX param tree, mapped declaratively onto the canonical checkpoint keys.

The canonical keys (LeRobot / openpi-PyTorch names, torch ``(out, in)`` layouts) are what
the FP32 reference loads and what every GPU weight spec converts into device buffers, so
an openpi checkpoint only needs this one mapping to reach the same buffers as a
safetensors file: each canonical tensor is one :class:`Slice` of one openpi leaf — index
the leading axes (scanned layer, gate/up, k/v), permute the rest, reshape. Moving values
between layouts is exact, so both sources give bit-identical weights.

Facts taken from Physical-Intelligence/openpi at commit 15a9616a (2026-06-16), read for
the tree only (nothing is copied or imported; openpi is not a dependency):

- ``src/openpi/models/gemma.py``: ``Module`` scans ``Block`` over depth (every
  ``llm/layers/...`` leaf has a leading depth axis); ``Attention`` holds ``q_einsum/w``
  (heads, width, head_dim) and ``kv_einsum/w`` (2, kv_heads, width, head_dim) [0]=k [1]=v
  (``qkv_einsum/w`` (3, heads, width, head_dim) when kv_heads == heads) and
  ``attn_vec_einsum/w`` (heads, head_dim, width); ``FeedForward``: ``gating_einsum``
  (2, width, mlp) [0]=gate [1]=up and ``linear`` (mlp, width); ``RMSNorm``: ``scale``
  (used as 1 + scale) or, with a condition, ``Dense_0`` (kernel (cond, 3 width), bias)
  -> [scale | shift | gate]; ``Embedder``: ``input_embedding`` (vocab, width); the second
  expert's names carry ``_1`` (``_name``); norms are ``pre_attention_norm``,
  ``pre_ffw_norm`` and ``final_norm``.
- ``src/openpi/models/siglip.py``: ``img/embedding`` conv kernel (P, P, 3, width),
  ``img/pos_embedding`` (1, patches, width), ``img/Transformer/encoderblock`` scanned
  (``LayerNorm_0``/``LayerNorm_1`` scale and bias, ``MlpBlock_0/Dense_0|1``,
  ``MultiHeadDotProductAttention_0/query|key|value`` kernel (width, heads, head_dim), bias
  (heads, head_dim), ``out`` kernel (heads, head_dim, width)), ``encoder_norm``, and the
  projector ``img/head``.
- ``src/openpi/models/pi0.py`` / ``pi0_config.py``: ``PaliGemma = {llm, img}`` plus
  ``nnx.Linear`` heads (kernel (in, out), bias): ``action_in_proj``, ``action_out_proj``
  and Pi0.5's ``time_mlp_in|out`` or Pi0's ``state_proj``, ``action_time_mlp_in|out``;
  Pi0.5's expert norms are adaRMS (``use_adarms=[False, True]``).
- ``src/openpi/models/model.py`` ``restore_params`` and ``src/openpi/training/
  checkpoints.py``: the Orbax item is ``{"params": tree}``; trees saved from training
  states end every path with ``value``.
- ``examples/convert_jax_model_to_pytorch.py``: the axis order of each leaf -> torch
  conversion (cross-checked against the shapes above).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from flash_rt.configs import GemmaConfig, ModelConfig, available_presets, load_config
from flash_rt.core.checkpoint import EXPERT_KEYS, PREFIX_LM_KEYS, PROJECTOR_KEYS, VISION_KEYS

# Axis orders of an indexed leaf slice, before the reshape to the canonical shape.
DENSE = (1, 0)  # flax kernel (in, out) -> torch (out, in)
HEADS_IN = (0, 2, 1)  # einsum (heads, in, head_dim) -> (heads * head_dim, in)
HEADS_OUT = (2, 0, 1)  # einsum (heads, head_dim, out) -> (out, heads * head_dim)
SIGLIP_QKV = (1, 2, 0)  # DenseGeneral (in, heads, head_dim) -> (heads * head_dim, in)
CONV = (3, 2, 0, 1)  # flax conv (P, P, in, out) -> torch (out, in, P, P)

_IMG = "PaliGemma/img"
_BLOCK = f"{_IMG}/Transformer/encoderblock"
_ATTN = f"{_BLOCK}/MultiHeadDotProductAttention_0"
_LLM = "PaliGemma/llm"


@dataclass(frozen=True)
class Slice:
    """Canonical tensor ``key`` = leaf[index] permuted by ``perm``, reshaped to ``shape``."""

    key: str
    leaf: str
    shape: tuple[int, ...]
    index: tuple[int, ...] = ()
    perm: Optional[tuple[int, ...]] = None

    def take(self, leaf: torch.Tensor) -> torch.Tensor:
        t = leaf[self.index] if self.index else leaf
        if self.perm is not None:
            t = t.permute(self.perm)
        return t.reshape(self.shape).contiguous()

    def put(self, leaf: torch.Tensor, tensor: torch.Tensor) -> None:
        """The inverse of :meth:`take`: write ``tensor`` into its place in ``leaf``."""
        sub = leaf[self.index] if self.index else leaf
        order = self.perm or tuple(range(sub.dim()))
        staged = tensor.reshape(tuple(sub.shape[a] for a in order))
        sub.copy_(staged.permute(tuple(order.index(a) for a in range(sub.dim()))))


@dataclass(frozen=True)
class OpenpiSpec:
    tree: dict[str, tuple[int, ...]]  # openpi leaf path (under params/) -> shape
    slices: tuple[Slice, ...]  # one per canonical key


class _Builder:
    """Collects the tree and the slices; ``{i}`` in keys is the scanned layer index."""

    def __init__(self):
        self.tree: dict[str, tuple[int, ...]] = {}
        self.slices: list[Slice] = []

    def leaf(self, path: str, shape: tuple[int, ...]) -> str:
        self.tree[path] = shape
        return path

    def take(self, key: str, leaf: str, shape: tuple[int, ...], *index: int,
             perm: Optional[tuple[int, ...]] = None) -> None:
        self.slices.append(Slice(key, leaf, shape, tuple(index), perm))

    def per_layer(self, depth: int, key: str, leaf: str, shape: tuple[int, ...], *lead: int,
                  perm: Optional[tuple[int, ...]] = None) -> None:
        """One slice per scanned layer; depth 0: an unscanned leaf, one slice."""
        if not depth:
            self.take(key, leaf, shape, *lead, perm=perm)
        for i in range(depth):
            self.take(key.replace("{i}", str(i)), leaf, shape, i, *lead, perm=perm)

    def dense(self, key: str, path: str, d_in: int, d_out: int) -> None:
        """An ``nnx.Linear`` / ``nn.Dense`` head: kernel (in, out) and bias."""
        self.take(f"{key}.weight", self.leaf(f"{path}/kernel", (d_in, d_out)), (d_out, d_in),
                  perm=DENSE)
        self.take(f"{key}.bias", self.leaf(f"{path}/bias", (d_out,)), (d_out,))


def _siglip(b: _Builder, cfg: ModelConfig) -> None:
    s, width = cfg.siglip, cfg.siglip.width
    depth, heads, hd = s.depth, s.num_heads, s.head_dim
    L = f"{VISION_KEYS}.encoder.layers.{{i}}"
    emb = f"{VISION_KEYS}.embeddings"
    b.take(f"{emb}.patch_embedding.weight",
           b.leaf(f"{_IMG}/embedding/kernel", (s.patch_size, s.patch_size, 3, width)),
           (width, 3, s.patch_size, s.patch_size), perm=CONV)
    b.take(f"{emb}.patch_embedding.bias", b.leaf(f"{_IMG}/embedding/bias", (width,)), (width,))
    b.take(f"{emb}.position_embedding.weight",
           b.leaf(f"{_IMG}/pos_embedding", (1, s.num_patches, width)), (s.num_patches, width), 0)
    for norm, name in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
        for flax, torch_name in (("scale", "weight"), ("bias", "bias")):
            b.per_layer(depth, f"{L}.{name}.{torch_name}",
                        b.leaf(f"{_BLOCK}/{norm}/{flax}", (depth, width)), (width,))
    for flax, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        b.per_layer(depth, f"{L}.self_attn.{proj}.weight",
                    b.leaf(f"{_ATTN}/{flax}/kernel", (depth, width, heads, hd)), (width, width),
                    perm=SIGLIP_QKV)
        b.per_layer(depth, f"{L}.self_attn.{proj}.bias",
                    b.leaf(f"{_ATTN}/{flax}/bias", (depth, heads, hd)), (width,))
    b.per_layer(depth, f"{L}.self_attn.out_proj.weight",
                b.leaf(f"{_ATTN}/out/kernel", (depth, heads, hd, width)), (width, width),
                perm=HEADS_OUT)
    b.per_layer(depth, f"{L}.self_attn.out_proj.bias",
                b.leaf(f"{_ATTN}/out/bias", (depth, width)), (width,))
    for dense, fc, d_in, d_out in (("Dense_0", "fc1", width, s.mlp_dim),
                                   ("Dense_1", "fc2", s.mlp_dim, width)):
        path = f"{_BLOCK}/MlpBlock_0/{dense}"
        b.per_layer(depth, f"{L}.mlp.{fc}.weight", b.leaf(f"{path}/kernel", (depth, d_in, d_out)),
                    (d_out, d_in), perm=DENSE)
        b.per_layer(depth, f"{L}.mlp.{fc}.bias", b.leaf(f"{path}/bias", (depth, d_out)), (d_out,))
    for flax, torch_name in (("scale", "weight"), ("bias", "bias")):
        b.take(f"{VISION_KEYS}.post_layernorm.{torch_name}",
               b.leaf(f"{_IMG}/Transformer/encoder_norm/{flax}", (width,)), (width,))
    b.dense(PROJECTOR_KEYS, f"{_IMG}/head", width, cfg.prefix.width)


def _gemma(b: _Builder, g: GemmaConfig, keys: str, suffix: str, cond_width: int) -> None:
    """One Gemma tower of openpi's mixture; ``suffix`` is "" (PaliGemma) or "_1" (expert);
    ``cond_width`` > 0 makes its norms adaRMS over a condition of that width."""
    depth, width, hd = g.depth, g.width, g.head_dim
    L = f"{keys}.layers.{{i}}"
    attn = f"{_LLM}/layers/attn"
    q_shape, kv_shape = (g.q_dim, width), (g.kv_dim, width)
    if g.num_kv_heads == g.num_heads:
        qkv = b.leaf(f"{attn}/qkv_einsum{suffix}/w", (depth, 3, g.num_heads, width, hd))
        for j, proj in enumerate("qkv"):
            b.per_layer(depth, f"{L}.self_attn.{proj}_proj.weight", qkv, q_shape, j,
                        perm=HEADS_IN)
    else:
        b.per_layer(depth, f"{L}.self_attn.q_proj.weight",
                    b.leaf(f"{attn}/q_einsum{suffix}/w", (depth, g.num_heads, width, hd)),
                    q_shape, perm=HEADS_IN)
        kv = b.leaf(f"{attn}/kv_einsum{suffix}/w", (depth, 2, g.num_kv_heads, width, hd))
        for j, proj in enumerate("kv"):
            b.per_layer(depth, f"{L}.self_attn.{proj}_proj.weight", kv, kv_shape, j,
                        perm=HEADS_IN)
    b.per_layer(depth, f"{L}.self_attn.o_proj.weight",
                b.leaf(f"{attn}/attn_vec_einsum{suffix}/w", (depth, g.num_heads, hd, width)),
                (width, g.q_dim), perm=HEADS_OUT)
    mlp = f"{_LLM}/layers/mlp{suffix}"
    gating = b.leaf(f"{mlp}/gating_einsum", (depth, 2, width, g.mlp_dim))
    for j, proj in enumerate(("gate_proj", "up_proj")):
        b.per_layer(depth, f"{L}.mlp.{proj}.weight", gating, (g.mlp_dim, width), j, perm=DENSE)
    b.per_layer(depth, f"{L}.mlp.down_proj.weight",
                b.leaf(f"{mlp}/linear", (depth, g.mlp_dim, width)), (width, g.mlp_dim),
                perm=DENSE)
    norms = ((f"{_LLM}/layers/pre_attention_norm{suffix}", f"{L}.input_layernorm", depth),
             (f"{_LLM}/layers/pre_ffw_norm{suffix}", f"{L}.post_attention_layernorm", depth),
             (f"{_LLM}/final_norm{suffix}", f"{keys}.norm", 0))
    for path, key, stacked in norms:
        lead = (stacked,) if stacked else ()
        if cond_width:
            mod = 3 * width
            b.per_layer(stacked, f"{key}.dense.weight",
                        b.leaf(f"{path}/Dense_0/kernel", lead + (cond_width, mod)),
                        (mod, cond_width), perm=DENSE)
            b.per_layer(stacked, f"{key}.dense.bias",
                        b.leaf(f"{path}/Dense_0/bias", lead + (mod,)), (mod,))
        else:
            b.per_layer(stacked, f"{key}.weight", b.leaf(f"{path}/scale", lead + (width,)),
                        (width,))


def build_openpi_spec(cfg: ModelConfig) -> OpenpiSpec:
    """The openpi tree of ``cfg`` and the slice of it behind every canonical key."""
    b = _Builder()
    _siglip(b, cfg)
    b.take(f"{PREFIX_LM_KEYS}.embed_tokens.weight",
           b.leaf(f"{_LLM}/embedder/input_embedding", (cfg.prefix.vocab_size, cfg.prefix.width)),
           (cfg.prefix.vocab_size, cfg.prefix.width))
    _gemma(b, cfg.prefix, PREFIX_LM_KEYS, "", 0)
    we = cfg.expert.width
    _gemma(b, cfg.expert, EXPERT_KEYS, "_1", cfg.time_emb_dim if cfg.adarms else 0)
    if cfg.state_token:
        b.dense("state_proj", "state_proj", cfg.action_dim, we)
    b.dense("action_in_proj", "action_in_proj", cfg.action_dim, we)
    b.dense("action_out_proj", "action_out_proj", we, cfg.action_dim)
    if cfg.adarms:
        b.dense("time_mlp_in", "time_mlp_in", cfg.time_emb_dim, we)
        b.dense("time_mlp_out", "time_mlp_out", we, we)
    else:
        b.dense("action_time_mlp_in", "action_time_mlp_in", we + cfg.time_emb_dim, we)
        b.dense("action_time_mlp_out", "action_time_mlp_out", we, we)
    return OpenpiSpec(tree=dict(b.tree), slices=tuple(b.slices))


def matching_preset(tree: dict[str, tuple[int, ...]], model: str) -> Optional[str]:
    """The preset of ``model`` whose openpi tree is exactly ``tree`` (paths and shapes)."""
    for preset in available_presets(model):
        if build_openpi_spec(load_config(model, preset)).tree == tree:
            return preset
    return None
