"""Typed model configuration.

One frozen dataclass tree per model family. The numbers themselves live in
``flash_rt/configs/<model>.yaml`` (presets ``full`` and ``tiny``); this module is
the only place that reads them, so no dimension literal is repeated elsewhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flash_rt.configs.head_dims import HeadDims
from flash_rt.configs.groot import GROOT, GrootConfig, groot_presets, load_groot_config

_CONFIG_DIR = Path(__file__).resolve().parent

MODELS = ("pi05", "pi0")  # the PaliGemma family (ModelConfig)
ALL_MODELS = MODELS + (GROOT,)  # GR00T N1.7 has its own tree: flash_rt/configs/groot.py
# Views the models were trained with: base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb.
MAX_VIEWS = 3


@dataclass(frozen=True)
class SiglipConfig:
    """SigLIP vision tower (pre-LN ViT, no CLS token) plus the linear projector."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    layer_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class GemmaConfig(HeadDims):
    """One Gemma tower (the 2B prefix LM or the 300M action expert)."""

    width: int
    depth: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    vocab_size: int = 0  # only the prefix LM has an embedding table
    rms_norm_eps: float = 1e-6


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes tensor shapes and the sampler for one policy."""

    model: str
    preset: str
    siglip: SiglipConfig
    prefix: GemmaConfig
    expert: GemmaConfig
    action_dim: int = 32
    horizon: int = 50
    num_steps: int = 10
    max_token_len: int = 200
    num_views: int = 3
    rope_theta: float = 10000.0
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    # Architecture switches between the two families (not hardware forks).
    adarms: bool = True  # Pi0.5: adaRMS expert norms + gated residuals
    state_token: bool = False  # Pi0: a state_proj token leads the suffix
    discrete_state_in_prompt: bool = True  # Pi0.5: state is written into the prompt
    normalization: str = "quantile"  # Pi0.5 quantile, Pi0 mean_std
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {MODELS}")
        p, e = self.prefix, self.expert
        if (p.depth, p.num_heads, p.num_kv_heads, p.head_dim) != (
            e.depth, e.num_heads, e.num_kv_heads, e.head_dim):
            raise ValueError(
                "prefix and expert towers share one attention per layer, so depth, heads, "
                f"kv heads and head_dim must match: prefix {p} vs expert {e}")
        if p.num_heads % p.num_kv_heads:
            raise ValueError(f"num_heads {p.num_heads} not a multiple of kv heads {p.num_kv_heads}")
        if self.siglip.width % self.siglip.num_heads:
            raise ValueError("siglip width must divide by its head count")
        if p.head_dim % 2:
            raise ValueError("RoPE needs an even head_dim")
        if self.normalization not in ("quantile", "mean_std"):
            raise ValueError(f"unknown normalization {self.normalization!r}")
        for name in ("horizon", "num_steps", "max_token_len", "num_views", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_views > MAX_VIEWS:
            raise ValueError(f"num_views must be in [1, {MAX_VIEWS}], got {self.num_views}")
        if self.expert.width % 2:
            raise ValueError("time embedding needs an even expert width")

    @property
    def tokens_per_view(self) -> int:
        return self.siglip.num_patches

    @property
    def max_prefix_len(self) -> int:
        return self.num_views * self.tokens_per_view + self.max_token_len

    @property
    def suffix_len(self) -> int:
        return self.horizon + (1 if self.state_token else 0)

    @property
    def time_emb_dim(self) -> int:
        return self.expert.width

    def with_overrides(self, **overrides: Any) -> "ModelConfig":
        """Runtime knobs (horizon, num_steps, num_views, max_token_len) without editing YAML."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(clean) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown config fields: {sorted(unknown)}")
        return dataclasses.replace(self, **clean)


def _read_yaml(model: str) -> dict:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {ALL_MODELS}")
    with open(_CONFIG_DIR / f"{model}.yaml", "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def available_presets(model: str) -> tuple[str, ...]:
    if model == GROOT:
        return groot_presets()
    return tuple(_read_yaml(model)["presets"])


def load_config(model: str = "pi05", preset: str = "full",
                **overrides: Any) -> ModelConfig | GrootConfig:
    """Build the config for ``model``/``preset`` from its YAML, then apply overrides."""
    if model == GROOT:
        return load_groot_config(preset, **overrides)
    raw = _read_yaml(model)
    presets = raw["presets"]
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {model}; expected one of {tuple(presets)}")
    body = dict(raw.get("common", {}))
    body.update(presets[preset])
    cfg = ModelConfig(
        model=model,
        preset=preset,
        siglip=SiglipConfig(**body.pop("siglip")),
        prefix=GemmaConfig(**body.pop("prefix")),
        expert=GemmaConfig(**body.pop("expert")),
        **body,
    )
    return cfg.with_overrides(**overrides)


__all__ = [
    "ALL_MODELS", "GROOT", "GrootConfig", "GemmaConfig", "MAX_VIEWS", "ModelConfig", "SiglipConfig", "MODELS", "available_presets", "load_config",
]
