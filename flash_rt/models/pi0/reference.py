"""Pi0 FP32 reference: a state token leads the suffix and time mixes into the action tokens.

The ground truth every Pi0 fast path is measured against.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from flash_rt.configs import ModelConfig
from flash_rt.models.common.flow_policy import FlowPolicyReference, Suffix, swish


class Pi0Reference(FlowPolicyReference):
    def __init__(self, cfg: ModelConfig):
        if cfg.adarms or not cfg.state_token:
            raise ValueError("Pi0Reference needs a pi0 config (state token, no adaRMS)")
        width = cfg.expert.width
        super().__init__(cfg, expert_cond_dim=None)
        self.state_proj = nn.Linear(cfg.action_dim, width)
        self.action_in_proj = nn.Linear(cfg.action_dim, width)
        self.action_out_proj = nn.Linear(width, cfg.action_dim)
        self.action_time_mlp_in = nn.Linear(width + cfg.time_emb_dim, width)
        self.action_time_mlp_out = nn.Linear(width, width)

    def embed_suffix(self, x_t: torch.Tensor, t: torch.Tensor,
                     state: Optional[torch.Tensor]) -> Suffix:
        if state is None:
            raise ValueError("Pi0 needs the normalised state (B, action_dim)")
        b, horizon = x_t.shape[:2]
        state_tok = self.state_proj(state.to(self.dtype))[:, None, :]
        time_emb = self.time_embedding(t)[:, None, :].expand(b, horizon, -1)
        mixed = torch.cat([self.action_in_proj(x_t.to(self.dtype)), time_emb], dim=-1)
        actions = self.action_time_mlp_out(swish(self.action_time_mlp_in(mixed)))
        ar = torch.zeros(horizon + 1, dtype=torch.bool, device=x_t.device)
        ar[0] = True  # state: sees prefix + itself
        ar[1] = True  # actions: see prefix + state + all actions
        return Suffix(tokens=torch.cat([state_tok, actions], dim=1), ar_mask=ar, cond=None)

    def project_actions(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.action_out_proj(hidden[:, 1:])
