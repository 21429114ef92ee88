"""The action head's transformer stacks (FP32 reference): the DiT and the VL self-attention.

Follows Isaac-GR00T n1.7-release ``gr00t/model/modules/dit.py`` (``TimestepEncoder``,
``AdaLayerNorm``, ``BasicTransformerBlock``, ``DiT``, ``AlternateVLDiT``,
``SelfAttentionTransformer``) with the diffusers 0.35.1 pieces it builds on
(``Attention`` + ``AttnProcessor2_0``, ``FeedForward`` with ``gelu-approximate``,
``Timesteps`` / ``TimestepEmbedding``). Parameter names mirror the checkpoint keys under
``action_head.model.`` and ``action_head.vl_self_attention.``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from flash_rt.configs.groot import TransformerConfig
from flash_rt.models.common.functional import attention, gelu_tanh

MAX_PERIOD = 10000.0  # diffusers get_timestep_embedding's default


def timestep_sinusoid(t: torch.Tensor, channels: int) -> torch.Tensor:
    """diffusers ``Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=1)``:
    frequencies exp(-ln(10000) * i / (channels/2 - 1)), output [cos, sin]."""
    half = channels // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / (half - 1))
    arg = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class _TimestepEmbedder(nn.Module):
    def __init__(self, channels: int, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(channels, width)
        self.linear_2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimestepEncoder(nn.Module):
    """Discrete timestep (B,) -> (B, width) conditioning."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.channels = cfg.timestep_channels
        self.timestep_embedder = _TimestepEmbedder(cfg.timestep_channels, cfg.width)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        w = self.timestep_embedder.linear_1.weight
        return self.timestep_embedder(timestep_sinusoid(t, self.channels).to(w.dtype))


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine, then x * (1 + scale) + shift from linear(silu(temb))."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(width, 2 * width)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=1)
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """diffusers Attention with biases: to_q/to_k/to_v, to_out.0; softmax(q k^T / sqrt(d))."""

    def __init__(self, width: int, heads: int, head_dim: int, kv_width: Optional[int] = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(width, inner)
        self.to_k = nn.Linear(kv_width or width, inner)
        self.to_v = nn.Linear(kv_width or width, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, width)])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, Sq, W); context (B, Sk, Wkv) or None (self-attention); key_mask (B, Sk) bool."""
        ctx = x if context is None else context
        b, sq, _ = x.shape
        sk = ctx.shape[1]
        q = self.to_q(x).view(b, sq, self.heads, self.head_dim)
        k = self.to_k(ctx).view(b, sk, self.heads, self.head_dim)
        v = self.to_v(ctx).view(b, sk, self.heads, self.head_dim)
        keys = (torch.ones(b, sk, dtype=torch.bool, device=x.device) if key_mask is None
                else key_mask.bool())
        return self.to_out[0](attention(q, k, v, keys[:, None, :].expand(b, sq, sk)))


class FeedForward(nn.Module):
    """net.0.proj -> tanh-GELU -> net.2 (diffusers FeedForward, gelu-approximate)."""

    def __init__(self, width: int, mult: int):
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(width, mult * width), nn.Identity(),
                                  nn.Linear(mult * width, width)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _GeluProj(nn.Module):
    def __init__(self, width: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(width, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(self.proj(x))


class DitBlock(nn.Module):
    """AdaLayerNorm -> attention (cross when kv_width is given) -> residual;
    LayerNorm (no affine) -> feed-forward -> residual."""

    def __init__(self, cfg: TransformerConfig, kv_width: Optional[int]):
        super().__init__()
        self.eps = cfg.norm_eps
        self.norm1 = AdaLayerNorm(cfg.width, cfg.norm_eps)
        self.attn1 = Attention(cfg.width, cfg.num_heads, cfg.head_dim, kv_width)
        self.ff = FeedForward(cfg.width, cfg.ff_mult)

    def forward(self, x, temb, context=None, key_mask=None):
        x = x + self.attn1(self.norm1(x, temb), context, key_mask)
        return x + self.ff(F.layer_norm(x, x.shape[-1:], eps=self.eps))


class Dit(nn.Module):
    """DiT / AlternateVLDiT: even blocks cross-attend to the backbone (alternating between
    its text and its image tokens every ``attend_text_every_n_blocks`` cross blocks when
    ``alternate``), odd blocks self-attend; adaptive output norm (shift first)."""

    def __init__(self, cfg: TransformerConfig, context_width: int, alternate: bool,
                 attend_text_every_n_blocks: int):
        super().__init__()
        self.cfg = cfg
        self.alternate = alternate
        self.text_period = 2 * attend_text_every_n_blocks
        self.timestep_encoder = TimestepEncoder(cfg)
        self.transformer_blocks = nn.ModuleList(
            DitBlock(cfg, None if cfg.is_self_attention(i) else context_width)
            for i in range(cfg.num_layers))
        self.proj_out_1 = nn.Linear(cfg.width, 2 * cfg.width)
        self.proj_out_2 = nn.Linear(cfg.width, cfg.output_dim)

    def cross_key_mask(self, block: int, valid: torch.Tensor,
                       image_mask: torch.Tensor) -> Optional[torch.Tensor]:
        """Backbone tokens a cross block reads: all valid ones (plain DiT), else the valid
        text tokens on blocks ``0, 2n, 4n, ...`` and the valid image tokens otherwise."""
        if not self.alternate:
            return None
        if block % self.text_period == 0:
            return valid & ~image_mask
        return valid & image_mask

    def forward(self, x: torch.Tensor, context: torch.Tensor, t: torch.Tensor,
                valid: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        temb = self.timestep_encoder(t)
        for i, block in enumerate(self.transformer_blocks):
            if self.cfg.is_self_attention(i):
                x = block(x, temb)
            else:
                x = block(x, temb, context, self.cross_key_mask(i, valid, image_mask))
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=1)
        x = F.layer_norm(x, x.shape[-1:], eps=self.cfg.out_norm_eps)
        return self.proj_out_2(x * (1 + scale[:, None]) + shift[:, None])


class SelfAttentionBlock(nn.Module):
    """Pre-LN (affine) self-attention + feed-forward block of the VL self-attention."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn1 = Attention(cfg.width, cfg.num_heads, cfg.head_dim)
        self.norm3 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.ff = FeedForward(cfg.width, cfg.ff_mult)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        return x + self.ff(self.norm3(x))


class SelfAttentionTransformer(nn.Module):
    """Unmasked self-attention over every backbone token (Isaac-GR00T passes no mask)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(SelfAttentionBlock(cfg)
                                                for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x
