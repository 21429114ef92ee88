"""GR00T N1.7 FP32 reference: the ground truth every GR00T fast path is measured against.

Follows Isaac-GR00T n1.7-release ``gr00t/model/gr00t_n1d7/gr00t_n1d7.py`` (``Gr00tN1d7``:
``Qwen3Backbone`` then ``Gr00tN1d7ActionHead.get_action``). The module tree mirrors the
released checkpoint keys: ``backbone.model.model.visual.*``,
``backbone.model.model.language_model.*`` and ``action_head.*``. The tied
``backbone.model.lm_head.weight`` the release carries is never used and not held (see
:func:`unused_keys`).

Inputs are preprocessed tensors (see ``processor.py``): normalised square views, the
prompt's token ids with each view's image tokens already expanded, the normalised padded
state, the embodiment id and the start noise.
"""
from __future__ import annotations

import torch
from torch import nn

from flash_rt.configs.groot import GrootConfig
from flash_rt.models.groot.action_head import ActionHead
from flash_rt.models.groot.language import LanguageModel, mrope_positions
from flash_rt.models.groot.vision import VisionTower

LM_HEAD_KEY = "backbone.model.lm_head.weight"


def unused_keys(cfg: GrootConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint keys the reference never reads, with their shapes (checked, not loaded).
    The LM head is tied to the embeddings and some exports drop it, so it may be absent."""
    return {LM_HEAD_KEY: (cfg.text.vocab_size, cfg.text.width)}



class _QwenVLModel(nn.Module):
    def __init__(self, cfg: GrootConfig):
        super().__init__()
        self.visual = VisionTower(cfg.vision)
        self.language_model = LanguageModel(cfg.text)


class _QwenVLForConditionalGeneration(nn.Module):
    def __init__(self, cfg: GrootConfig):
        super().__init__()
        self.model = _QwenVLModel(cfg)


class Backbone(nn.Module):
    """Cosmos-Reason2-2B: image tokens into the prompt, LLM up to ``select_layer``."""

    def __init__(self, cfg: GrootConfig):
        super().__init__()
        self.cfg = cfg
        self.model = _QwenVLForConditionalGeneration(cfg)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (V, 3, S, S), input_ids / token_mask (1, L) -> (features (1, L, W),
        image_mask (1, L))."""
        inner = self.model.model
        lm = inner.language_model
        image_mask = input_ids == self.cfg.tokens.image_token_id
        image_tokens, deepstack = inner.visual(pixels.to(lm.embed_tokens.weight.dtype))
        if int(image_mask.sum()) != image_tokens.shape[0]:
            raise ValueError(f"{int(image_mask.sum())} image tokens in the prompt but "
                             f"{image_tokens.shape[0]} image features")
        embeds = lm.embed_tokens(input_ids).clone()
        embeds[image_mask] = image_tokens.to(embeds.dtype)
        grid = self.cfg.image.edge // (self.cfg.vision.patch_size * self.cfg.vision.spatial_merge_size)
        positions = mrope_positions(input_ids[0], self.cfg.tokens.image_token_id, grid)
        feats = lm(embeds, positions.to(input_ids.device), token_mask.bool(), image_mask,
                   deepstack)
        return feats, image_mask


class GrootReference(nn.Module):
    def __init__(self, cfg: GrootConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.action_head = ActionHead(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.action_head.model.proj_out_2.weight.dtype

    @torch.no_grad()
    def sample_actions(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                       token_mask: torch.Tensor, state: torch.Tensor,
                       embodiment_id: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """-> normalised actions (1, action_horizon, max_action_dim), FP32."""
        feats, image_mask = self.backbone(pixels, input_ids, token_mask)
        ctx = self.action_head.condition(feats, token_mask.bool(), image_mask)
        return self.action_head.sample(ctx, state.to(self.dtype), embodiment_id.long(), noise)
