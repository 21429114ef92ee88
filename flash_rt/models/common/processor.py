"""Raw robot observation -> model tensors, and model output -> robot actions.

The policy/processor split (as in LeRobot): everything here is hardware independent, so
every frontend of a model (cpu reference, hopper, thor, rtx) feeds the same tensors.
Model-specific prompt construction is the one hook (``prompt_ids``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from flash_rt.configs import ModelConfig
from flash_rt.processing import Normalizer, Tokenizer, check_views, pad_tokens, prepare_views


@dataclass
class Observation:
    """One preprocessed observation, batch 1."""

    pixels: torch.Tensor  # (1, V, 3, S, S) float32 in [-1, 1]
    view_mask: torch.Tensor  # (1, V) bool
    tokens: torch.Tensor  # (1, max_token_len) int64, right-padded with 0
    token_mask: torch.Tensor  # (1, max_token_len) bool
    state: torch.Tensor  # (1, action_dim) float32, normalised and zero-padded


@dataclass
class RawObservation:
    """Validated inputs with the camera frames left as they came (None = missing view)."""

    images: list  # num_views entries: uint8 HxWx3 array or None
    view_mask: np.ndarray  # (V,) bool
    tokens: np.ndarray  # (max_token_len,) int64, right-padded with 0
    token_mask: np.ndarray  # (max_token_len,) bool
    state: np.ndarray  # (action_dim,) float32, normalised and zero-padded


class PolicyProcessor:
    def __init__(self, cfg: ModelConfig, normalizer: Normalizer,
                 tokenizer: Optional[Tokenizer], action_dims: Optional[int] = None):
        self.cfg = cfg
        self.normalizer = normalizer
        self.tokenizer = tokenizer
        self.action_dims = action_dims or normalizer.num_action_dims
        if not 1 <= self.action_dims <= cfg.action_dim:
            raise ValueError(f"action_dims must be in [1, {cfg.action_dim}], "
                             f"got {self.action_dims}")

    @property
    def state_dims(self) -> int:
        """Length of the raw robot state ``predict`` takes."""
        return self.normalizer.num_state_dims

    @property
    def num_views(self) -> int:
        return self.cfg.num_views

    # -- model hook -----------------------------------------------------------------------
    def prompt_ids(self, prompt: str, norm_state: Optional[np.ndarray]) -> list[int]:
        raise NotImplementedError

    state_required_with_token_ids = True

    # -- shared -----------------------------------------------------------------------------
    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("no tokenizer: pass tokenizer=<path to tokenizer.model> to "
                             "load_model, put tokenizer.model in the checkpoint dir, or pass "
                             "token_ids= to predict")
        return self.tokenizer

    def prepare_raw(self, images: Sequence[Optional[np.ndarray]], state: Optional[np.ndarray],
                    prompt: Optional[str] = None,
                    token_ids: Optional[Sequence[int]] = None) -> RawObservation:
        """Validate everything and build the prompt tokens, but leave the camera frames raw
        (GPU frontends resize them on the device)."""
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
            raise TypeError("images must be a list/tuple of per-view uint8 HxWx3 arrays "
                            f"(None for a missing view), got {type(images).__name__}")
        if (prompt is None) == (token_ids is None):
            raise ValueError("pass exactly one of prompt= or token_ids=")
        views, view_mask = check_views(images, self.cfg.num_views)
        if not bool(view_mask.any()):
            raise ValueError("every camera view is missing: at least one image is required")
        if state is None:
            if prompt is not None or self.state_required_with_token_ids:
                raise ValueError(f"{self.cfg.model} needs the robot state")
            norm_state = np.zeros(self.cfg.action_dim, dtype=np.float32)
        else:
            norm_state = self.normalizer.normalize_state(state)
        ids = self.prompt_ids(prompt, norm_state) if prompt is not None else list(token_ids)
        tokens, token_mask = pad_tokens(ids, self.cfg.max_token_len,
                                        vocab_size=self.cfg.prefix.vocab_size)
        return RawObservation(images=views, view_mask=view_mask, tokens=tokens,
                              token_mask=token_mask,
                              state=np.asarray(norm_state, dtype=np.float32))

    def prepare(self, images: Sequence[Optional[np.ndarray]], state: Optional[np.ndarray],
                prompt: Optional[str] = None,
                token_ids: Optional[Sequence[int]] = None) -> Observation:
        raw = self.prepare_raw(images, state, prompt=prompt, token_ids=token_ids)
        pixels, view_mask = prepare_views(raw.images, self.cfg.num_views,
                                          self.cfg.siglip.image_size)
        return Observation(
            pixels=pixels[None],
            view_mask=view_mask[None],
            tokens=torch.from_numpy(raw.tokens)[None],
            token_mask=torch.from_numpy(raw.token_mask)[None],
            state=torch.from_numpy(raw.state)[None],
        )

    def postprocess(self, norm_actions: np.ndarray) -> np.ndarray:
        return self.normalizer.unnormalize_actions(norm_actions, self.action_dims)
