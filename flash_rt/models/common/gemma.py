"""Gemma towers (FP32 reference): the 2B prefix LM and the 300M action expert.

Both towers share one attention per layer. Because the prefix never attends to the suffix,
that joint attention is computed exactly as: run the prefix alone and keep each layer's
post-RoPE K/V, then run the suffix with queries over [cached prefix K/V ; own K/V].
Parameter names mirror the checkpoint (``layers.N.self_attn.q_proj.weight`` ...).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from flash_rt.configs import GemmaConfig
from flash_rt.models.common.functional import (
    apply_rope, attention, gelu_tanh, gemma_rms_norm, rms_norm,
)

KV = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    """Gemma RMSNorm with a learned w used as (1 + w)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None):
        return gemma_rms_norm(x, self.weight, self.eps), None


class AdaRMSNorm(nn.Module):
    """Pi0.5 adaptive RMSNorm: dense(cond) -> [scale, shift, gate]; no learned weight.

    Returns (rms(x) * (1 + scale) + shift, gate); the gate multiplies the residual branch.
    """

    def __init__(self, width: int, cond_dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * width)

    def modulation(self, cond: torch.Tensor):
        scale, shift, gate = torch.chunk(self.dense(cond)[:, None, :], 3, dim=-1)
        return scale, shift, gate

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None):
        if cond is None:
            raise ValueError("adaRMSNorm needs the time condition")
        scale, shift, gate = self.modulation(cond)
        return (rms_norm(x, self.eps) * (1.0 + scale) + shift).to(x.dtype), gate


class GemmaAttention(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.width, cfg.q_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.kv_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.kv_dim, bias=False)
        self.o_proj = nn.Linear(cfg.q_dim, cfg.width, bias=False)

    def qkv(self, x: torch.Tensor, positions: torch.Tensor, theta: float):
        b, s, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(b, s, c.num_heads, c.head_dim)
        k = self.k_proj(x).view(b, s, c.num_kv_heads, c.head_dim)
        v = self.v_proj(x).view(b, s, c.num_kv_heads, c.head_dim)
        return apply_rope(q, positions, theta), apply_rope(k, positions, theta), v


class GemmaMlp(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_dim, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


def _residual(x: torch.Tensor, y: torch.Tensor, gate: Optional[torch.Tensor]) -> torch.Tensor:
    return x + (y if gate is None else gate * y)


class GemmaDecoderLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, cond_dim: Optional[int]):
        super().__init__()
        norm = (lambda: AdaRMSNorm(cfg.width, cond_dim, cfg.rms_norm_eps)) if cond_dim else (
            lambda: RMSNorm(cfg.width, cfg.rms_norm_eps))
        self.input_layernorm = norm()
        self.self_attn = GemmaAttention(cfg)
        self.post_attention_layernorm = norm()
        self.mlp = GemmaMlp(cfg)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, theta: float,
                past: Optional[KV] = None, cond: Optional[torch.Tensor] = None,
                kv_only: bool = False):
        """One layer. ``past`` K/V (the prefix cache) is prepended to this tower's own K/V.

        Returns (x_out or None when kv_only, (k, v) of this tower's tokens).
        """
        xn, gate = self.input_layernorm(x, cond)
        q, k, v = self.self_attn.qkv(xn, positions, theta)
        if kv_only:
            return None, (k, v)
        keys = k if past is None else torch.cat([past[0], k], dim=1)
        values = v if past is None else torch.cat([past[1], v], dim=1)
        x = _residual(x, self.self_attn.o_proj(attention(q, keys, values, mask)), gate)
        xn, gate = self.post_attention_layernorm(x, cond)
        return _residual(x, self.mlp(xn), gate), (k, v)


class GemmaModel(nn.Module):
    """A Gemma stack. ``cond_dim`` set -> adaRMS norms (Pi0.5 expert); None -> (1+w) RMSNorm."""

    def __init__(self, cfg: GemmaConfig, cond_dim: Optional[int] = None,
                 with_embedding: bool = False):
        super().__init__()
        self.cfg = cfg
        if with_embedding:
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.width)
        self.layers = nn.ModuleList(GemmaDecoderLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm = (AdaRMSNorm(cfg.width, cond_dim, cfg.rms_norm_eps) if cond_dim
                     else RMSNorm(cfg.width, cfg.rms_norm_eps))

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text embeddings are scaled by sqrt(width); image tokens are not."""
        return self.embed_tokens(token_ids) * (self.cfg.width ** 0.5)

    def prefix_kv_cache(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                        theta: float) -> list[KV]:
        """Run the prefix and keep every layer's post-RoPE K/V.

        The last layer's o_proj/MLP and the final norm feed nothing, so they are skipped.
        """
        cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, positions, mask, theta, kv_only=(i == len(self.layers) - 1))
            cache.append(kv)
        return cache

    def suffix_forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                       theta: float, cache: list[KV],
                       cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the suffix tokens over the prefix cache; returns the final-normed hidden states."""
        for layer, past in zip(self.layers, cache):
            x, _ = layer(x, positions, mask, theta, past=past, cond=cond)
        out, _ = self.norm(x, cond)
        return out
