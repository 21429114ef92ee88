"""The sizes every PaliGemma flow policy's kernel sequence needs (Pi0 and Pi0.5)."""
from __future__ import annotations

from dataclasses import dataclass

from flash_rt.configs import ModelConfig

# The GPU buffers' gate/up layout: the fused (2F, K) weight's rows alternate 8 gate rows and
# the same 8 up rows (the weight spec writes it), so a GEMM's gate/up output holds gate
# column f at 16 (f // 8) + f % 8 and its up partner 8 columns on. Why 8: in a Hopper wgmma
# accumulator a thread holds the same columns of every 8-column group, so a GEMM epilogue
# finds gate and up of one output in its own registers (the persistent expert kernel's
# tiles and the fused gate/up + GeGLU GEMM); the GeGLU kernels read the same layout.
GATE_UP_GROUP = 8


@dataclass(frozen=True)
class PaliGemmaDims:
    """Every size of the kernel sequences, derived once from the config.

    Row layout of the prefix (``prefix_len = views * 256 + text_len`` rows): view 0 image
    tokens, view 1, ..., then text tokens right-padded. The suffix (``suffix_len`` rows of
    the K/V caches, after the valid prefix rows) holds ``state_tokens`` state tokens (Pi0: 1,
    Pi0.5: 0) followed by the ``horizon`` action tokens.
    """

    views: int
    tokens_per_view: int
    patch_k: int
    image_size: int
    patch_size: int
    sig_width: int
    sig_heads: int
    sig_mlp: int
    sig_depth: int
    sig_eps: float
    text_len: int
    width: int  # prefix LM
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    depth: int
    eps: float
    ex_width: int
    ex_mlp: int
    ex_eps: float
    horizon: int
    action_dim: int
    steps: int
    theta: float
    vocab: int
    state_tokens: int = 0

    @classmethod
    def from_config(cls, cfg: ModelConfig, patch_k: int) -> "PaliGemmaDims":
        s, p, e = cfg.siglip, cfg.prefix, cfg.expert
        return cls(views=cfg.num_views, tokens_per_view=cfg.tokens_per_view, patch_k=patch_k,
                   image_size=s.image_size, patch_size=s.patch_size, sig_width=s.width,
                   sig_heads=s.num_heads, sig_mlp=s.mlp_dim, sig_depth=s.depth,
                   sig_eps=s.layer_norm_eps, text_len=cfg.max_token_len, width=p.width,
                   heads=p.num_heads, kv_heads=p.num_kv_heads, head_dim=p.head_dim,
                   mlp=p.mlp_dim, depth=p.depth, eps=p.rms_norm_eps, ex_width=e.width,
                   ex_mlp=e.mlp_dim, ex_eps=e.rms_norm_eps, horizon=cfg.horizon,
                   action_dim=cfg.action_dim, steps=cfg.num_steps, theta=cfg.rope_theta,
                   vocab=p.vocab_size, state_tokens=cfg.suffix_len - cfg.horizon)

    @property
    def image_rows(self) -> int:
        return self.views * self.tokens_per_view

    @property
    def prefix_len(self) -> int:
        return self.image_rows + self.text_len

    @property
    def suffix_len(self) -> int:
        return self.state_tokens + self.horizon

    @property
    def cache_rows(self) -> int:
        return self.prefix_len + self.suffix_len

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim
