"""Qwen3 LLM of the Qwen3-VL backbone, truncated at GR00T's ``select_layer`` (FP32 reference).

Follows transformers 4.57.3 ``models/qwen3_vl/modeling_qwen3_vl.py`` (``Qwen3VLTextModel``,
``Qwen3VLModel.get_rope_index``) as Isaac-GR00T n1.7-release's
``gr00t/model/modules/qwen3_backbone.py`` uses it: the layers past ``select_layer`` are
dropped, DeepStack features are added to the image positions after the first layers, and
the action head reads the *last kept layer's output before the final norm*
(``hidden_states[-1]``; checked against transformers 4.57.3, see docs/groot.md). The final
``norm`` is kept as a parameter because the checkpoint carries it, but it feeds nothing.

Attention is causal over the whole prompt (chat template, image tokens, instruction) with
interleaved multimodal RoPE: text tokens advance one position on all three axes; the
tokens of an image share the temporal position and take their (row, column) block
coordinates on the height/width axes.
"""
from __future__ import annotations

import torch
from torch import nn

from flash_rt.configs.groot import QwenTextConfig
from flash_rt.models.common.functional import attention, rms_norm, rope_inv_freq, rotate_half
from flash_rt.models.common.gemma import GemmaAttention


class QwenRMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w (Qwen multiplies by w, not 1 + w)."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * rms_norm(x, self.eps)


def mrope_axis_of_pair(cfg: QwenTextConfig) -> torch.Tensor:
    """Which position axis (0 t, 1 h, 2 w) rotates each rotary pair: interleaved MRoPE gives
    pair i to h when i % 3 == 1 and i < 3 * section[1], to w when i % 3 == 2 and
    i < 3 * section[2], and to t otherwise."""
    pairs = torch.arange(cfg.head_dim // 2)
    axis = torch.zeros_like(pairs)
    for a in (1, 2):
        axis[(pairs % 3 == a) & (pairs < 3 * cfg.mrope_section[a])] = a
    return axis


def mrope_cos_sin(positions: torch.Tensor, cfg: QwenTextConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (3, S) -> cos, sin (S, head_dim/2)."""
    inv = rope_inv_freq(cfg.head_dim, cfg.rope_theta, device=positions.device)
    axis = mrope_axis_of_pair(cfg).to(positions.device)
    angles = positions.float()[axis].T * inv  # (S, pairs): pair i uses its own axis
    return torch.cos(angles), torch.sin(angles)


def mrope_positions(input_ids: torch.Tensor, image_token_id: int, grid: int) -> torch.Tensor:
    """(S,) token ids of one prompt -> (3, S) positions (get_rope_index for still images).

    Every maximal run of image tokens is one view of grid x grid merged tokens; text runs
    continue from the largest position used so far + 1.
    """
    ids = input_ids.tolist()
    out = torch.empty(3, len(ids), dtype=torch.long)
    nxt, i = 0, 0
    while i < len(ids):
        if ids[i] != image_token_id:
            out[:, i] = nxt
            nxt, i = nxt + 1, i + 1
            continue
        run = grid * grid
        if ids[i:i + run] != [image_token_id] * run or (i + run < len(ids)
                                                         and ids[i + run] == image_token_id):
            raise ValueError(f"image tokens at {i} do not form one view of {run} tokens")
        rows = torch.arange(grid).repeat_interleave(grid)
        cols = torch.arange(grid).repeat(grid)
        out[0, i:i + run] = nxt
        out[1, i:i + run] = nxt + rows
        out[2, i:i + run] = nxt + cols
        nxt, i = nxt + grid, i + run  # largest used (nxt + grid - 1) + 1
    return out


class TextAttention(GemmaAttention):
    """Gemma's bias-free q/k/v/o projections plus Qwen3's per-head q/k RMSNorm; MRoPE."""

    def __init__(self, cfg: QwenTextConfig):
        super().__init__(cfg)
        self.q_norm = QwenRMSNorm(cfg.head_dim, cfg.rms_norm_eps)  # per head, before RoPE
        self.k_norm = QwenRMSNorm(cfg.head_dim, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        c = self.cfg
        q = self.q_norm(self.q_proj(x).view(b, s, c.num_heads, c.head_dim))
        k = self.k_norm(self.k_proj(x).view(b, s, c.num_kv_heads, c.head_dim))
        v = self.v_proj(x).view(b, s, c.num_kv_heads, c.head_dim)
        q = rotate_half(q, cos[:, None], sin[:, None])
        k = rotate_half(k, cos[:, None], sin[:, None])
        return self.o_proj(attention(q, k, v, mask))


class TextMlp(nn.Module):
    def __init__(self, cfg: QwenTextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_dim, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class TextLayer(nn.Module):
    def __init__(self, cfg: QwenTextConfig):
        super().__init__()
        self.input_layernorm = QwenRMSNorm(cfg.width, cfg.rms_norm_eps)
        self.self_attn = TextAttention(cfg)
        self.post_attention_layernorm = QwenRMSNorm(cfg.width, cfg.rms_norm_eps)
        self.mlp = TextMlp(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LanguageModel(nn.Module):
    def __init__(self, cfg: QwenTextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.width)
        self.layers = nn.ModuleList(TextLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = QwenRMSNorm(cfg.width, cfg.rms_norm_eps)  # in the checkpoint, unused

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                image_mask: torch.Tensor, deepstack: list[torch.Tensor]) -> torch.Tensor:
        """embeds (1, S, W) with image tokens in place, positions (3, S), valid (1, S) bool,
        image_mask (1, S) bool -> the last kept layer's output (1, S, W), pre-norm."""
        s = embeds.shape[1]
        causal = torch.tril(torch.ones(s, s, dtype=torch.bool, device=embeds.device))
        mask = causal[None] & valid[:, None, :]
        cos, sin = mrope_cos_sin(positions, self.cfg)
        x = embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask)
            if i < len(deepstack):
                x = x.clone()
                x[image_mask] = x[image_mask] + deepstack[i].to(x.dtype)
        return x
