"""PaliGemma + action-expert flow-matching policy: the part Pi0 and Pi0.5 share.

Subclasses define only how the suffix is embedded (``embed_suffix``) and which suffix
outputs are actions; the prefix, KV cache, masks, positions and Euler sampler live here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from flash_rt.configs import ModelConfig
from flash_rt.models.common.functional import (
    flow_timesteps, positions_from_mask, prefix_attention_mask, sinusoidal_time_embedding,
)
from flash_rt.models.common.gemma import KV, GemmaModel
from flash_rt.models.common.siglip import Projector, VisionTower


class _PaliGemmaInner(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.vision_tower = VisionTower(cfg.siglip)
        self.multi_modal_projector = Projector(cfg.siglip.width, cfg.prefix.width)
        self.language_model = GemmaModel(cfg.prefix, with_embedding=True)


class _PaliGemma(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.model = _PaliGemmaInner(cfg)


class _Expert(nn.Module):
    def __init__(self, cfg: ModelConfig, cond_dim: Optional[int]):
        super().__init__()
        self.model = GemmaModel(cfg.expert, cond_dim=cond_dim)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: ModelConfig, expert_cond_dim: Optional[int]):
        super().__init__()
        self.paligemma = _PaliGemma(cfg)
        self.gemma_expert = _Expert(cfg, expert_cond_dim)


@dataclass
class PrefixCache:
    """Everything the denoising steps need from the prefix pass."""

    kv: list[KV]
    input_mask: torch.Tensor  # (B, P) bool


@dataclass
class Suffix:
    tokens: torch.Tensor  # (B, Ss, expert width)
    ar_mask: torch.Tensor  # (Ss,) bool, big_vision autoregressive boundaries
    cond: Optional[torch.Tensor]  # (B, cond) adaRMS condition or None


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class FlowPolicyReference(nn.Module):
    """FP32 reference sampler. Inputs are already preprocessed tensors (see processors)."""

    def __init__(self, cfg: ModelConfig, expert_cond_dim: Optional[int]):
        super().__init__()
        self.cfg = cfg
        self.paligemma_with_expert = PaliGemmaWithExpert(cfg, expert_cond_dim)

    # -- subclass hooks -------------------------------------------------------------------
    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor,
                     state: Optional[torch.Tensor]) -> Suffix:
        raise NotImplementedError

    def project_actions(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- shared pieces --------------------------------------------------------------------
    @property
    def _lm(self) -> GemmaModel:
        return self.paligemma_with_expert.paligemma.model.language_model

    @property
    def _expert(self) -> GemmaModel:
        return self.paligemma_with_expert.gemma_expert.model

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        emb = sinusoidal_time_embedding(t, c.time_emb_dim, c.time_min_period, c.time_max_period)
        return emb.to(self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (FP32 for the reference; bf16 for the torch baseline)."""
        return self._lm.layers[0].self_attn.q_proj.weight.dtype

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, V, 3, S, S) in [-1, 1] -> (B, V * tokens_per_view, prefix width)."""
        b, v = pixels.shape[:2]
        inner = self.paligemma_with_expert.paligemma.model
        feats = inner.multi_modal_projector(inner.vision_tower(pixels.flatten(0, 1).to(self.dtype)))
        return feats.reshape(b, v * feats.shape[1], feats.shape[2])

    def embed_prefix(self, pixels, view_mask, tokens, token_mask):
        image_tokens = self.embed_images(pixels)
        image_mask = view_mask.bool().repeat_interleave(self.cfg.tokens_per_view, dim=1)
        embeds = torch.cat([image_tokens, self._lm.embed(tokens)], dim=1)
        return embeds, torch.cat([image_mask, token_mask.bool()], dim=1)

    def encode_prefix(self, pixels, view_mask, tokens, token_mask) -> PrefixCache:
        embeds, input_mask = self.embed_prefix(pixels, view_mask, tokens, token_mask)
        ar = torch.zeros_like(input_mask)  # the prefix is bidirectional
        mask = prefix_attention_mask(input_mask, ar)
        kv = self._lm.prefix_kv_cache(embeds, positions_from_mask(input_mask), mask,
                                      self.cfg.rope_theta)
        return PrefixCache(kv=kv, input_mask=input_mask)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cache: PrefixCache,
                 state: Optional[torch.Tensor]) -> torch.Tensor:
        suffix = self.embed_suffix(x_t, t, state)
        b, s = suffix.tokens.shape[:2]
        p = cache.input_mask.shape[1]
        dev = cache.input_mask.device
        full_mask = torch.cat([cache.input_mask, torch.ones(b, s, dtype=torch.bool, device=dev)],
                              dim=1)
        full_ar = torch.cat([torch.zeros(b, p, dtype=torch.bool, device=dev),
                             suffix.ar_mask[None].expand(b, s)], dim=1)
        att = prefix_attention_mask(full_mask, full_ar)[:, p:, :]
        positions = positions_from_mask(full_mask)[:, p:]
        hidden = self._expert.suffix_forward(suffix.tokens, positions, att, self.cfg.rope_theta,
                                             cache.kv, cond=suffix.cond)
        return self.project_actions(hidden).float()

    @torch.no_grad()
    def sample_actions(self, pixels: torch.Tensor, view_mask: torch.Tensor, tokens: torch.Tensor,
                       token_mask: torch.Tensor, noise: torch.Tensor,
                       state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Euler-integrate the flow from noise (t=1) to actions (t=0). Returns (B, H, action_dim).

        The Euler state stays FP32 whatever the compute dtype; the tensors may live on any
        device (all inputs on the model's device)."""
        cache = self.encode_prefix(pixels, view_mask, tokens, token_mask)
        dt = -1.0 / self.cfg.num_steps
        x = noise.float()
        for t in flow_timesteps(self.cfg.num_steps):
            t_vec = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
            x = x + dt * self.velocity(x, t_vec, cache, state)
        return x
