"""Embodiment-conditioned projections of the GR00T action head (FP32 reference).

Follows Isaac-GR00T n1.7-release ``gr00t/model/modules/embodiment_conditioned_mlp.py``:
every linear holds one weight (in, out) and bias per embodiment (``W``, ``b``) and the
embodiment id picks them. Parameter names mirror the keys under ``action_head.state_encoder``,
``action_head.action_encoder`` and ``action_head.action_decoder``.
"""
from __future__ import annotations

import torch
from torch import nn

from flash_rt.models.common.flow_policy import swish

ENCODING_BASE = 10000.0  # SinusoidalPositionalEncoding's log-spaced frequency base


class CategorySpecificLinear(nn.Module):
    def __init__(self, num_categories: int, in_dim: int, out_dim: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(num_categories, in_dim, out_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, out_dim))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x (B, T, in), ids (B,) -> (B, T, out) = x @ W[id] + b[id]."""
        return torch.bmm(x, self.W[ids]) + self.b[ids][:, None, :]


class CategorySpecificMLP(nn.Module):
    """layer1 -> ReLU -> layer2, per embodiment (state encoder, action decoder)."""

    def __init__(self, num_categories: int, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, in_dim, hidden_dim)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.layer2(torch.relu(self.layer1(x, ids)), ids)


def timestep_encoding(t: torch.Tensor, width: int) -> torch.Tensor:
    """[sin, cos] of t * exp(-i ln(10000) / (width/2)); t (B, T) -> (B, T, width)."""
    half = width // 2
    step = torch.log(torch.tensor(ENCODING_BASE)) / half  # float32, as the original
    freqs = torch.exp(-torch.arange(half, dtype=torch.float32, device=t.device) * step.to(t.device))
    arg = t.float()[..., None] * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class MultiEmbodimentActionEncoder(nn.Module):
    """Noisy action chunk + discrete flow time -> action tokens:
    W3(swish(W2([W1(a), enc(t)])))."""

    def __init__(self, action_dim: int, width: int, num_embodiments: int):
        super().__init__()
        self.width = width
        self.W1 = CategorySpecificLinear(num_embodiments, action_dim, width)
        self.W2 = CategorySpecificLinear(num_embodiments, 2 * width, width)
        self.W3 = CategorySpecificLinear(num_embodiments, width, width)

    def forward(self, actions: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b, horizon, _ = actions.shape
        a = self.W1(actions, ids)
        tau = timestep_encoding(t[:, None].expand(b, horizon), self.width).to(a.dtype)
        return self.W3(swish(self.W2(torch.cat([a, tau], dim=-1), ids)), ids)
