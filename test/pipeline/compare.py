"""Comparisons of a fast path against the FP32 reference, shared by the CPU-emulated and
the GPU precision tests."""
from __future__ import annotations

import numpy as np
import torch

from flash_rt.core.metrics import cosine, max_abs

__all__ = ["cosine", "flow_cosine", "max_abs", "prefix_kv_cosine", "state_kv_cosine"]


def flow_cosine(got, want, noise) -> float:
    """Cosine of what the model added to the noise (actions - noise). Stricter than the
    chunk cosine, which the noise alone keeps high when the model's update is small."""
    return cosine(np.asarray(got) - noise, np.asarray(want) - noise)


def prefix_kv_cosine(k_cache: torch.Tensor, v_cache: torch.Tensor, reference, obs) -> float:
    """Lowest cosine over layers (and K, V) between the fast path's prefix cache rows and the
    reference's post-RoPE K/V, on valid prefix tokens. Measures SigLIP + the prefix LM
    directly, however little the action expert leans on them."""
    dev = next(reference.parameters()).device
    with torch.no_grad():
        cache = reference.encode_prefix(obs.pixels.to(dev), obs.view_mask.to(dev),
                                        obs.tokens.to(dev), obs.token_mask.to(dev))
    valid = cache.input_mask[0].cpu()
    rows = valid.shape[0]
    worst = 1.0
    for layer, (k, v) in enumerate(cache.kv):
        for ours, theirs in ((k_cache[layer], k), (v_cache[layer], v)):
            a = ours[:rows].float().cpu()[valid]
            b = theirs[0].reshape(rows, -1).float().cpu()[valid]
            worst = min(worst, cosine(a.numpy(), b.numpy()))
    return worst


def state_kv_cosine(k_cache: torch.Tensor, v_cache: torch.Tensor, reference, obs) -> float:
    """Pi0: lowest cosine over layers (and K, V) between the fast path's state-token cache
    row (row ``valid_len``, right after the last valid text token) and the reference's state
    token run through its expert layers over its own prefix cache (prefix + itself only).
    Measures the state pass directly: the state is one key among hundreds for the actions,
    so the chunk alone barely shows it."""
    dev = next(reference.parameters()).device
    with torch.no_grad():
        cache = reference.encode_prefix(obs.pixels.to(dev), obs.view_mask.to(dev),
                                        obs.tokens.to(dev), obs.token_mask.to(dev))
        mask = cache.input_mask
        row = int(mask[0].nonzero().max()) + 1
        x = reference.state_proj(obs.state.to(dev, reference.dtype))[:, None, :]
        positions = mask.sum(1, keepdim=True)
        sees = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)[:, None, :]
        worst = 1.0
        for layer, (ours_k, ours_v, past) in enumerate(zip(k_cache, v_cache, cache.kv)):
            block = reference.paligemma_with_expert.gemma_expert.model.layers[layer]
            x, (k, v) = block(x, positions, sees, reference.cfg.rope_theta, past=past)
            for ours, theirs in ((ours_k, k), (ours_v, v)):
                worst = min(worst, cosine(ours[row].float().cpu().numpy(),
                                          theirs[0, 0].reshape(-1).float().cpu().numpy()))
    return worst
