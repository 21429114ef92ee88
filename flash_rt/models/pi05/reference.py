"""Pi0.5 FP32 reference: adaRMS action expert conditioned on the flow time.

The ground truth every Pi0.5 fast path is measured against.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from flash_rt.configs import ModelConfig
from flash_rt.models.common.flow_policy import FlowPolicyReference, Suffix, swish


class Pi05Reference(FlowPolicyReference):
    def __init__(self, cfg: ModelConfig):
        if not cfg.adarms or cfg.state_token:
            raise ValueError("Pi05Reference needs a pi05 config (adaRMS, no state token)")
        width = cfg.expert.width
        super().__init__(cfg, expert_cond_dim=width)
        self.action_in_proj = nn.Linear(cfg.action_dim, width)
        self.action_out_proj = nn.Linear(width, cfg.action_dim)
        self.time_mlp_in = nn.Linear(cfg.time_emb_dim, width)
        self.time_mlp_out = nn.Linear(width, width)

    def adarms_condition(self, t: torch.Tensor) -> torch.Tensor:
        """Depends on t only: the fast paths precompute it for every step."""
        return swish(self.time_mlp_out(swish(self.time_mlp_in(self.time_embedding(t)))))

    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor,
                     state: Optional[torch.Tensor]) -> Suffix:
        horizon = x_t.shape[1]
        ar = torch.zeros(horizon, dtype=torch.bool, device=x_t.device)
        ar[0] = True  # actions see the prefix and each other; the prefix never sees them
        return Suffix(tokens=self.action_in_proj(x_t.to(self.dtype)), ar_mask=ar,
                      cond=self.adarms_condition(t))

    def project_actions(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.action_out_proj(hidden)
