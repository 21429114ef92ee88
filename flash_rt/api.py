"""Public entry point: ``flash_rt.load_model``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from flash_rt.frontends.base import PolicyFrontend
from flash_rt.hardware import frontend_class


def load_model(checkpoint: str | Path, model: str = "pi05", framework: str = "torch",
               hardware: str = "auto", *, num_views: Optional[int] = None,
               horizon: Optional[int] = None, num_steps: Optional[int] = None,
               max_token_len: Optional[int] = None, action_dims: Optional[int] = None,
               tokenizer: Optional[str | Path] = None,
               preset: Optional[str] = None, cache_dir: Optional[str | Path] = None,
               weight_cache: bool = True, precision: Optional[str] = None,
               embodiment: Optional[str] = None,
               asset_id: Optional[str] = None) -> PolicyFrontend:
    """Load a policy from a checkpoint directory and return its frontend.

    ``hardware="auto"`` picks the fast path registered for the visible GPU and falls back to
    the FP32 ``cpu`` reference. Runtime knobs (views, horizon, steps, token budget) override
    the config preset the checkpoint implies; ``action_dims`` is how many action dims the
    robot uses (default: the length of the action norm stats). GPU paths cache converted
    weights and calibrated activation scales under ``cache_dir`` (default
    ``$FLASH_RT_CACHE_DIR`` or ``~/.cache/flash_rt``; ``weight_cache=False`` disables it).
    ``precision`` picks a GPU path's mode: ``fp8`` (default), ``fp8-all``, ``fp8-bf16-expert``
    or ``bf16`` (see docs/api.md). ``framework="jax"`` reads an openpi checkpoint directory
    (``params/`` Orbax + ``assets/<asset_id>/norm_stats.json``; ``asset_id`` defaults to the
    only one present) into the same compute paths as ``"torch"`` (``model.safetensors``);
    ``asset_id`` is refused by every other format (GR00T included: its norm stats come with
    the embodiment). ``embodiment`` (GR00T only; Pi models refuse it) is the embodiment tag
    whose cameras, state/action groups, normalisation and projector id to use (default: the
    checkpoint's only embodiment).
    See docs/api.md.
    """
    cls = frontend_class(model, framework, hardware)
    return cls(checkpoint, num_views=num_views, horizon=horizon, num_steps=num_steps,
               max_token_len=max_token_len, action_dims=action_dims, tokenizer=tokenizer,
               preset=preset, cache_dir=cache_dir, weight_cache=weight_cache,
               precision=precision, embodiment=embodiment, asset_id=asset_id)
