"""GR00T N1.7: raw robot observation -> model tensors, model output -> robot actions.

Cameras (one uint8 RGB frame per video key of the embodiment, in modality order), the
instruction (or the prompt's token ids) and the flat robot state (state groups concatenated
in modality order) in; the action chunk in robot units out (action groups concatenated, the
embodiment's own horizon). Hardware independent, like the Pi processors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from flash_rt.configs.groot import GrootConfig
from flash_rt.models.groot.image import normalize_view, transform_view
from flash_rt.models.groot.modality import EmbodimentSpec
from flash_rt.models.groot.prompt import expand_image_tokens, render_prompt
from flash_rt.processing.bpe import BpeTokenizer


@dataclass
class GrootObservation:
    pixels: torch.Tensor  # (V, 3, S, S) float32, normalised
    input_ids: torch.Tensor  # (1, L) int64, image placeholders expanded
    token_mask: torch.Tensor  # (1, L) bool (batch 1: all True)
    state: torch.Tensor  # (1, state_history_length, max_state_dim) float32
    embodiment_id: torch.Tensor  # (1,) int64


class GrootProcessor:
    def __init__(self, cfg: GrootConfig, embodiment: EmbodimentSpec,
                 tokenizer: Optional[BpeTokenizer], chat_template: Optional[Path] = None,
                 action_dims: Optional[int] = None, horizon: Optional[int] = None,
                 formalize_language: bool = True):
        self.cfg = cfg
        self.embodiment = embodiment
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.formalize_language = formalize_language
        e = embodiment
        if cfg.state_history_length != 1:
            raise ValueError("a state history longer than 1 step is not supported (predict "
                             "takes the current state only)")
        if e.state_dims > cfg.max_state_dim or e.action_dims > cfg.max_action_dim:
            raise ValueError(f"embodiment {e.tag!r}: {e.state_dims} state / {e.action_dims} "
                             f"action dims exceed the model's {cfg.max_state_dim} / "
                             f"{cfg.max_action_dim}")
        if not 1 <= e.action_horizon <= cfg.action_horizon:
            raise ValueError(f"embodiment {e.tag!r}: action horizon {e.action_horizon} not in "
                             f"[1, {cfg.action_horizon}]")
        self.action_dims = action_dims or e.action_dims
        if not 1 <= self.action_dims <= e.action_dims:
            raise ValueError(f"action_dims must be in [1, {e.action_dims}] for embodiment "
                             f"{e.tag!r}, got {self.action_dims}")
        self.horizon = horizon or e.action_horizon
        if not 1 <= self.horizon <= e.action_horizon:
            raise ValueError(f"horizon must be in [1, {e.action_horizon}] for embodiment "
                             f"{e.tag!r}, got {self.horizon}")
        if tokenizer is not None:
            t = cfg.tokens
            for name, want in ((t.image_token, t.image_token_id),
                               (t.vision_start_token, t.vision_start_token_id),
                               (t.vision_end_token, t.vision_end_token_id)):
                if tokenizer.token_id(name) != want:
                    raise ValueError(f"{tokenizer.path}: {name} is id {tokenizer.token_id(name)}"
                                     f", the model expects {want}")

    @property
    def num_views(self) -> int:
        return self.embodiment.num_views

    @property
    def state_dims(self) -> int:
        """Length of the flat raw robot state ``predict`` takes."""
        return self.embodiment.state_dims

    def prompt_ids(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("no tokenizer: put the Qwen tokenizer.json in the checkpoint dir, "
                             "pass tokenizer=<path> to load_model, or pass token_ids= to predict")
        return self.tokenizer.encode(render_prompt(prompt, self.num_views, self.cfg.tokens,
                                                   self.chat_template, self.formalize_language))

    def views(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        if isinstance(images, np.ndarray) or not isinstance(images, (list, tuple)):
            raise TypeError("images must be a list/tuple of per-view uint8 HxWx3 arrays")
        if len(images) != self.num_views or any(img is None for img in images):
            raise ValueError(f"embodiment {self.embodiment.tag!r} takes exactly "
                             f"{self.num_views} views {list(self.embodiment.video_keys)}, got "
                             f"{[None if i is None else getattr(i, 'shape', i) for i in images]}")
        return torch.stack([normalize_view(transform_view(img, self.cfg.image), self.cfg.image)
                            for img in images])

    def prepare(self, images: Sequence[np.ndarray], state: Optional[np.ndarray],
                prompt: Optional[str] = None,
                token_ids: Optional[Sequence[int]] = None) -> GrootObservation:
        if (prompt is None) == (token_ids is None):
            raise ValueError("pass exactly one of prompt= or token_ids=")
        if state is None:
            raise ValueError("GR00T needs the robot state")
        pixels = self.views(images)
        ids = self.prompt_ids(prompt) if prompt is not None else list(token_ids)
        ids = expand_image_tokens(ids, self.cfg.tokens, self.num_views, self.cfg.tokens_per_view)
        if min(ids) < 0 or max(ids) >= self.cfg.text.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.cfg.text.vocab_size})")
        norm = np.zeros((self.cfg.state_history_length, self.cfg.max_state_dim), np.float32)
        norm[:, :self.embodiment.state_dims] = self.embodiment.normalize_state(state)
        input_ids = torch.tensor([ids], dtype=torch.long)
        return GrootObservation(pixels=pixels, input_ids=input_ids,
                                token_mask=torch.ones_like(input_ids, dtype=torch.bool),
                                state=torch.from_numpy(norm)[None],
                                embodiment_id=torch.tensor([self.embodiment.embodiment_id]))

    def postprocess(self, norm_actions: np.ndarray) -> np.ndarray:
        """(action_horizon, max_action_dim) -> float32 (horizon, action_dims), robot units."""
        a = np.asarray(norm_actions, dtype=np.float64)
        if a.shape != (self.cfg.action_horizon, self.cfg.max_action_dim):
            raise ValueError(f"actions must be ({self.cfg.action_horizon}, "
                             f"{self.cfg.max_action_dim}), got {a.shape}")
        a = a[:self.horizon]
        if not np.all(np.isfinite(a)):
            raise ValueError("model actions contain NaN or inf")
        return self.embodiment.unnormalize_actions(a)[:, :self.action_dims].astype(np.float32)
