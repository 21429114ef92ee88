"""GR00T N1.7's attention sites, declared like Pi0.5's so a GPU path only adds a backend.

Shapes come from the config; the prompt length is the one runtime bound (chat-template
tokens + every view's image tokens + the instruction), so it is a parameter.
"""
from __future__ import annotations

from flash_rt.configs.groot import GrootConfig
from flash_rt.hardware.attention import (DIT_CROSS, DIT_SELF, LLM, VISION, VL_SELF,
                                        AttentionSpec, SiteSpec)


def prompt_len(cfg: GrootConfig, num_views: int, max_text_tokens: int) -> int:
    """Backbone tokens of a prompt: the views' merged image tokens + every other token."""
    return num_views * cfg.tokens_per_view + max_text_tokens


def attention_spec(cfg: GrootConfig, num_views: int, max_text_tokens: int) -> AttentionSpec:
    """Sites of one predict: per-view bidirectional vision attention, the causal GQA LLM
    over the prompt, the VL self-attention over the same tokens, and the DiT's blocks over
    the state token + action tokens (self) or the prompt's tokens (cross, masked to its text
    or its image tokens by the block)."""
    v, t, d, s = cfg.vision, cfg.text, cfg.dit, cfg.vl_self_attention
    patches = (cfg.image.edge // v.patch_size) ** 2
    prompt = prompt_len(cfg, num_views, max_text_tokens)
    action_tokens = 1 + cfg.action_horizon  # the state token leads
    self_blocks = sum(d.is_self_attention(i) for i in range(d.num_layers))
    sites = [
        SiteSpec(VISION, v.depth, v.num_heads, v.num_heads, v.head_dim, patches, patches,
                 batch=num_views),
        SiteSpec(LLM, t.num_layers, t.num_heads, t.num_kv_heads, t.head_dim, prompt, prompt),
        SiteSpec(DIT_SELF, self_blocks, d.num_heads, d.num_heads, d.head_dim, action_tokens,
                 action_tokens),
        SiteSpec(DIT_CROSS, d.num_layers - self_blocks, d.num_heads, d.num_heads, d.head_dim,
                 action_tokens, prompt),
    ]
    if s.num_layers:
        sites.append(SiteSpec(VL_SELF, s.num_layers, s.num_heads, s.num_heads, s.head_dim,
                              prompt, prompt))
    return AttentionSpec(sites=tuple(sites))
