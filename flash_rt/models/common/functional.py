"""Stateless FP32 math shared by the reference models.

Each function is written straight from the model spec (docs in ../shared/docs) so it can be
checked against an independent formula in tests; the fast paths are measured against these.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Masked attention logits use a finite constant: -inf would turn fully masked rows
# (padding queries) into NaN, which then leaks through 0 * NaN in later matmuls.
MASK_VALUE = -2.3819763e38


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps), variance in fp32 (no learned weight)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)


def gemma_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's RMSNorm: the stored weight w multiplies as (1 + w)."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (normed * (1.0 + weight.float())).to(x.dtype)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def rope_inv_freq(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """freq_i = theta^(-2i/head_dim) for i in [0, head_dim/2)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
    return (theta ** -exponent).float()


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Radians (..., head_dim/2) = positions * freq_i, in float32."""
    inv_freq = rope_inv_freq(head_dim, theta, device=positions.device)
    return positions.to(torch.float32)[..., None] * inv_freq


def rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (i, i + D/2) of x (..., D) by cos/sin (broadcast to (..., D/2))."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE.

    x: (B, S, H, D); positions: (B, S) integer. The first half of the head dim pairs with
    the second half (not interleaved), as in openpi's Gemma.
    """
    angles = rope_angles(positions, x.shape[-1], theta)[:, :, None, :]
    return rotate_half(x, torch.cos(angles), torch.sin(angles)).to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Exact softmax attention with GQA broadcast and the finite mask constant.

    q: (B, Sq, H, D), k/v: (B, Sk, Hkv, D), mask: (B, Sq, Sk) bool (True = may attend).
    q is scaled by D^-0.5 here. Returns (B, Sq, H*D).
    """
    b, sq, h, d = q.shape
    hkv = k.shape[2]
    if h % hkv:
        raise ValueError(f"{h} query heads do not group over {hkv} kv heads")
    group = h // hkv
    qf = q.float().reshape(b, sq, hkv, group, d) * (d ** -0.5)
    logits = torch.einsum("bqkgd,bskd->bkgqs", qf, k.float())
    logits = logits.masked_fill(~mask[:, None, None, :, :], MASK_VALUE)
    probs = torch.softmax(logits, dim=-1)
    out = torch.einsum("bkgqs,bskd->bqkgd", probs, v.float())
    return out.reshape(b, sq, h * d).to(q.dtype)


def prefix_attention_mask(input_mask: torch.Tensor, ar_mask: torch.Tensor) -> torch.Tensor:
    """big_vision cumsum rule: i sees valid j iff cumsum(ar)[j] <= cumsum(ar)[i].

    input_mask, ar_mask: (B, S) bool/int. Returns (B, S, S) bool.
    """
    cum = torch.cumsum(ar_mask.to(torch.int64), dim=1)
    allowed = cum[:, None, :] <= cum[:, :, None]
    valid = input_mask.bool()
    return allowed & valid[:, None, :] & valid[:, :, None]


def positions_from_mask(input_mask: torch.Tensor) -> torch.Tensor:
    """RoPE positions: cumsum(mask) - 1, so masked tokens do not advance the position."""
    return torch.cumsum(input_mask.to(torch.int64), dim=1) - 1


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, min_period: float,
                              max_period: float) -> torch.Tensor:
    """[sin(2 pi t / period), cos(...)] with log-spaced periods (sin half first). t: (B,)."""
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    frac = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    scaled = t.to(torch.float64)[:, None] * (2.0 * math.pi / period)[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=-1).float()


def flow_timesteps(num_steps: int) -> list[float]:
    """t = 1 (noise) down to 1/num_steps; the Euler step is dt = -1/num_steps."""
    return [1.0 - k / num_steps for k in range(num_steps)]
