"""Typed configuration of GR00T N1.7 (the one config tree of the ``groot`` model).

Sizes come from ``groot.yaml`` (backbone dims per preset, action-head defaults) and, for a
real checkpoint, from its ``config.json``, whose action-head keys carry Isaac-GR00T's names
(``gr00t/configs/model/gr00t_n1d7.py``, tag n1.7-release): :func:`action_head_from_json`
maps them. Nothing else in the code base holds a GR00T dimension.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from flash_rt.configs.head_dims import HeadDims

GROOT = "groot"
_YAML = Path(__file__).resolve().parent / "groot.yaml"
# config.json keys of Gr00tN1d7Config that fix a shape or the sampler (others, e.g. the
# training knobs, are ignored; unknown nested keys of the two sub-configs too).
ACTION_HEAD_KEYS = (
    "backbone_embedding_dim", "hidden_size", "input_embedding_dim", "max_state_dim",
    "max_action_dim", "action_horizon", "state_history_length", "max_num_embodiments",
    "max_seq_len", "num_inference_timesteps", "num_timestep_buckets",
    "attend_text_every_n_blocks", "add_pos_embed", "use_vlln", "use_alternate_vl_dit",
    "select_layer")
IMAGE_KEYS = ("image_target_size", "image_crop_size", "shortest_image_edge", "crop_fraction")


@dataclass(frozen=True)
class QwenVisionConfig:
    """Qwen3-VL vision tower (transformers' Qwen3VLVisionConfig names in the comments)."""

    depth: int
    width: int  # hidden_size
    num_heads: int
    mlp_dim: int  # intermediate_size
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    out_width: int  # out_hidden_size: the LLM width the merger projects to
    num_position_embeddings: int  # learned table, a square grid interpolated per image
    deepstack_layers: tuple[int, ...]  # deepstack_visual_indexes
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def merged_width(self) -> int:
        """Width of one merged token (spatial_merge_size^2 patches side by side)."""
        return self.width * self.spatial_merge_size ** 2

    @property
    def position_grid(self) -> int:
        return int(round(self.num_position_embeddings ** 0.5))

    @property
    def patch_dim(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size ** 2


@dataclass(frozen=True)
class QwenTextConfig(HeadDims):
    """The Qwen3 LLM, truncated: ``num_layers`` is GR00T's ``select_layer``."""

    width: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    vocab_size: int
    rope_theta: float
    mrope_section: tuple[int, int, int]  # rotary pairs given to (t, h, w), interleaved
    rms_norm_eps: float = 1e-6


@dataclass(frozen=True)
class TransformerConfig:
    """A diffusers-style transformer stack (the DiT, or the VL self-attention)."""

    num_layers: int
    num_heads: int
    head_dim: int
    output_dim: int = 0  # DiT only: proj_out_2 width
    interleave_self_attention: bool = False
    norm_eps: float = 1e-5
    out_norm_eps: float = 1e-6  # DiT norm_out
    ff_mult: int = 4
    timestep_channels: int = 256  # DiT TimestepEncoder's sinusoid width

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    def is_self_attention(self, block: int) -> bool:
        return self.interleave_self_attention and block % 2 == 1


@dataclass(frozen=True)
class ImageConfig:
    """GR00T's eval transform and the Qwen3-VL pixel normalisation."""

    image_target_size: tuple[int, int]
    image_crop_size: tuple[int, int]
    shortest_image_edge: Optional[int]
    crop_fraction: Optional[float]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    @property
    def edge(self) -> int:
        """The square side every view ends at (SmallestMaxSize after letterboxing)."""
        return self.shortest_image_edge or self.image_target_size[0]

    @property
    def fraction(self) -> float:
        """Centre-crop fraction (image_augmentations.build_image_transformations_albumentations)."""
        if self.crop_fraction is not None:
            return self.crop_fraction
        return self.image_crop_size[0] / self.image_target_size[0]


@dataclass(frozen=True)
class TokenConfig:
    image_token: str
    vision_start_token: str
    vision_end_token: str
    image_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int


@dataclass(frozen=True)
class GrootConfig:
    model: str
    preset: str
    vision: QwenVisionConfig
    text: QwenTextConfig
    dit: TransformerConfig
    vl_self_attention: TransformerConfig
    image: ImageConfig
    tokens: TokenConfig
    backbone_embedding_dim: int
    hidden_size: int
    input_embedding_dim: int
    max_state_dim: int
    max_action_dim: int
    action_horizon: int
    state_history_length: int
    max_num_embodiments: int
    max_seq_len: int
    num_inference_timesteps: int
    num_timestep_buckets: int
    attend_text_every_n_blocks: int
    add_pos_embed: bool
    use_vlln: bool
    use_alternate_vl_dit: bool
    vlln_eps: float = 1e-5  # nn.LayerNorm default in the action head

    def __post_init__(self) -> None:
        v, t, d, s = self.vision, self.text, self.dit, self.vl_self_attention
        checks = [
            (self.model == GROOT, f"GrootConfig is for model {GROOT!r}, not {self.model!r}"),
            (v.width % v.num_heads == 0 and v.head_dim % 4 == 0,
             "vision head_dim must divide width and be a multiple of 4 (2-D rotary halves)"),
            (v.position_grid ** 2 == v.num_position_embeddings,
             "vision num_position_embeddings must be a square grid"),
            (v.out_width == t.width == self.backbone_embedding_dim,
             "vision out_width, LLM width and backbone_embedding_dim must agree (image "
             "tokens replace text embeddings; the action head reads LLM states)"),
            (t.num_heads % t.num_kv_heads == 0, "LLM heads must group over the KV heads"),
            (2 * sum(t.mrope_section) == t.head_dim,
             "mrope_section must split the LLM head_dim/2 rotary pairs"),
            (t.num_layers > len(v.deepstack_layers),
             "select_layer must exceed the deepstack layer count (the action head reads the "
             "last kept layer's output, which must not be a deepstack injection layer)"),
            (all(0 <= i < v.depth for i in v.deepstack_layers), "deepstack layer out of range"),
            (d.width == self.input_embedding_dim,
             "DiT heads*head_dim must equal input_embedding_dim (state/action tokens feed it)"),
            (d.output_dim == self.hidden_size, "DiT output_dim must equal hidden_size"),
            (s.num_layers == 0 or s.width == self.backbone_embedding_dim,
             "VL self-attention heads*head_dim must equal backbone_embedding_dim"),
            (self.use_alternate_vl_dit <= d.interleave_self_attention,
             "AlternateVLDiT needs interleave_self_attention"),
            (self.action_horizon <= self.max_seq_len or not self.add_pos_embed,
             "action_horizon exceeds the position table (max_seq_len)"),
            (self.image.edge % (v.patch_size * v.spatial_merge_size) == 0,
             "image edge must be a multiple of patch_size * spatial_merge_size"),
        ]
        for ok, why in checks:
            if not ok:
                raise ValueError(f"groot/{self.preset}: {why}")
        for name in ("action_horizon", "num_inference_timesteps", "max_state_dim",
                     "max_action_dim", "max_num_embodiments", "state_history_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    # The names the frontends share with the Pi configs.
    @property
    def horizon(self) -> int:
        return self.action_horizon

    @property
    def action_dim(self) -> int:
        return self.max_action_dim

    @property
    def num_steps(self) -> int:
        return self.num_inference_timesteps

    @property
    def tokens_per_view(self) -> int:
        grid = self.image.edge // self.vision.patch_size
        return (grid // self.vision.spatial_merge_size) ** 2

    def with_overrides(self, num_steps: Optional[int] = None, **unused: Any) -> "GrootConfig":
        """Runtime knob: the flow-matching step count (the rest is the checkpoint's)."""
        rejected = {k: v for k, v in unused.items() if v is not None}
        if rejected:
            raise TypeError(f"groot config cannot override {sorted(rejected)}")
        if num_steps is None:
            return self
        return dataclasses.replace(self, num_inference_timesteps=int(num_steps))


def _read_yaml() -> dict:
    with open(_YAML, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def groot_presets() -> tuple[str, ...]:
    return tuple(_read_yaml()["presets"])


def _merged(raw: dict, preset: str) -> dict:
    presets = raw["presets"]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {GROOT}; expected one of "
                         f"{tuple(presets)}")
    body = {k: dict(v) for k, v in raw["common"].items()}
    for section, values in presets[preset].items():
        body.setdefault(section, {}).update(values)
    return body


def action_head_from_json(config_json: Mapping[str, Any]) -> dict:
    """The shape-fixing keys of a checkpoint's config.json (Gr00tN1d7Config names)."""
    out = {k: config_json[k] for k in ACTION_HEAD_KEYS if k in config_json}
    for sub in ("diffusion_model_cfg", "vl_self_attention_cfg"):
        if sub in config_json:
            out[sub] = dict(config_json[sub] or {})
    return out


def _stack(cfg: Mapping[str, Any], where: str, **extra: Any) -> TransformerConfig:
    if cfg.get("positional_embeddings"):
        raise ValueError(f"{where}: positional_embeddings={cfg['positional_embeddings']!r} is "
                         "not supported (GR00T N1.7 releases use none)")
    if cfg.get("norm_type", "ada_norm") != "ada_norm":
        raise ValueError(f"{where}: only norm_type 'ada_norm' is supported")
    return TransformerConfig(num_layers=int(cfg.get("num_layers", 0)),
                             num_heads=int(cfg.get("num_attention_heads", 1)),
                             head_dim=int(cfg.get("attention_head_dim", 1)), **extra)


def load_groot_config(preset: str = "full", config_json: Optional[Mapping[str, Any]] = None,
                      image_json: Optional[Mapping[str, Any]] = None,
                      **overrides: Any) -> GrootConfig:
    """The config of ``preset``; ``config_json`` (a checkpoint's config.json) overrides the
    action head and ``image_json`` (its processor kwargs) the image transform."""
    body = _merged(_read_yaml(), preset)
    head = dict(body["action_head"])
    for sub in ("diffusion_model_cfg", "vl_self_attention_cfg"):
        head[sub] = dict(head[sub])
    for key, value in action_head_from_json(config_json or {}).items():
        if isinstance(value, dict):
            head[key].update(value)
        else:
            head[key] = value
    image = dict(body["image"])
    image.update({k: v for k, v in (image_json or {}).items() if k in IMAGE_KEYS and v is not None})
    dmc, vsa = head.pop("diffusion_model_cfg"), head.pop("vl_self_attention_cfg")
    if dmc.get("interleave_self_attention") is None:
        dmc["interleave_self_attention"] = False
    vision = dict(body["vision"])
    vision["deepstack_layers"] = tuple(vision["deepstack_layers"])
    text = dict(body["text"])
    text["mrope_section"] = tuple(text["mrope_section"])
    cfg = GrootConfig(
        model=GROOT, preset=preset,
        vision=QwenVisionConfig(**vision),
        text=QwenTextConfig(num_layers=int(head.pop("select_layer")), **text),
        dit=_stack(dmc, "diffusion_model_cfg", output_dim=int(dmc["output_dim"]),
                   interleave_self_attention=bool(dmc["interleave_self_attention"])),
        vl_self_attention=_stack(vsa, "vl_self_attention_cfg"),
        image=ImageConfig(
            image_target_size=tuple(image["image_target_size"]),
            image_crop_size=tuple(image["image_crop_size"]),
            shortest_image_edge=image.get("shortest_image_edge"),
            crop_fraction=image.get("crop_fraction"),
            pixel_mean=tuple(image["pixel_mean"]), pixel_std=tuple(image["pixel_std"])),
        tokens=TokenConfig(**body["tokens"]),
        **{k: (bool(v) if isinstance(v, bool) else v) for k, v in head.items()})
    return cfg.with_overrides(**overrides)


__all__ = ["ACTION_HEAD_KEYS", "GROOT", "GrootConfig", "ImageConfig", "QwenTextConfig",
           "QwenVisionConfig", "TokenConfig", "TransformerConfig", "action_head_from_json",
           "groot_presets", "load_groot_config"]
