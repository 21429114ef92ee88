"""GR00T N1.7 flow-matching action head (FP32 reference).

Follows Isaac-GR00T n1.7-release ``gr00t/model/gr00t_n1d7/gr00t_n1d7.py``
(``Gr00tN1d7ActionHead.get_action``): the backbone states go through the VL LayerNorm and
the VL self-attention; the state and each noisy action chunk are embedded per embodiment;
the DiT predicts a velocity for the action tokens; Euler steps integrate from noise at
t = 0 to actions at t = 1 (dt = +1/N), the DiT and action encoder seeing the *discretised*
time ``int(k / N * num_timestep_buckets)``. Parameter names mirror ``action_head.*``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flash_rt.configs.groot import GrootConfig
from flash_rt.models.groot.embodiment import CategorySpecificMLP, MultiEmbodimentActionEncoder
from flash_rt.models.groot.transformer import Dit, SelfAttentionTransformer


def discrete_timesteps(num_steps: int, buckets: int) -> list[int]:
    """The bucket index each Euler step feeds the network: int(k / N * buckets)."""
    return [int(k / float(num_steps) * buckets) for k in range(num_steps)]


@dataclass
class VlContext:
    """What every denoising step reads from the backbone pass."""

    tokens: torch.Tensor  # (B, S, backbone width), after VL norm + self-attention
    valid: torch.Tensor  # (B, S) bool: real (non-padding) backbone tokens
    image_mask: torch.Tensor  # (B, S) bool: image tokens


class ActionHead(nn.Module):
    def __init__(self, cfg: GrootConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.max_num_embodiments
        self.model = Dit(cfg.dit, cfg.backbone_embedding_dim, cfg.use_alternate_vl_dit,
                         cfg.attend_text_every_n_blocks)
        self.state_encoder = CategorySpecificMLP(
            n, cfg.max_state_dim * cfg.state_history_length, cfg.hidden_size,
            cfg.input_embedding_dim)
        self.action_encoder = MultiEmbodimentActionEncoder(cfg.max_action_dim,
                                                           cfg.input_embedding_dim, n)
        self.action_decoder = CategorySpecificMLP(n, cfg.hidden_size, cfg.hidden_size,
                                                  cfg.max_action_dim)
        self.vlln = (nn.LayerNorm(cfg.backbone_embedding_dim, eps=cfg.vlln_eps)
                     if cfg.use_vlln else nn.Identity())
        self.vl_self_attention = (SelfAttentionTransformer(cfg.vl_self_attention)
                                  if cfg.vl_self_attention.num_layers else nn.Identity())
        if cfg.add_pos_embed:
            self.position_embedding = nn.Embedding(cfg.max_seq_len, cfg.input_embedding_dim)

    def condition(self, features: torch.Tensor, valid: torch.Tensor,
                  image_mask: torch.Tensor) -> VlContext:
        return VlContext(self.vl_self_attention(self.vlln(features)), valid, image_mask)

    def encode_state(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """state (B, history, max_state_dim), normalised + padded -> (B, 1, input width)."""
        return self.state_encoder(state.reshape(state.shape[0], 1, -1), ids)

    def velocity(self, actions: torch.Tensor, t_bucket: int, state_tokens: torch.Tensor,
                 ids: torch.Tensor, ctx: VlContext) -> torch.Tensor:
        b, horizon = actions.shape[:2]
        t = torch.full((b,), t_bucket, dtype=torch.long, device=actions.device)
        tokens = self.action_encoder(actions, t, ids)
        if self.cfg.add_pos_embed:
            tokens = tokens + self.position_embedding.weight[:horizon][None]
        out = self.model(torch.cat([state_tokens, tokens], dim=1), ctx.tokens, t, ctx.valid,
                         ctx.image_mask)
        return self.action_decoder(out, ids)[:, -horizon:]

    def sample(self, ctx: VlContext, state: torch.Tensor, ids: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
        """Euler-integrate from ``noise`` (B, H, max_action_dim) to normalised actions."""
        state_tokens = self.encode_state(state, ids)
        n = self.cfg.num_inference_timesteps
        x = noise.float()
        for t_bucket in discrete_timesteps(n, self.cfg.num_timestep_buckets):
            x = x + (1.0 / n) * self.velocity(x.to(ctx.tokens.dtype), t_bucket, state_tokens,
                                              ids, ctx).float()
        return x
