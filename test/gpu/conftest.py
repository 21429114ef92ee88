"""GPU tests of the Pi0.5 fast path: skipped (with the reason) without CUDA; with CUDA but
no kernel module they fail, so a GPU run cannot pass by skipping."""
from __future__ import annotations

import pytest
import torch

from flash_rt import kernels


@pytest.fixture(scope="session")
def gpu():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available: the fast-path tests need an NVIDIA GPU (run on the device)")
    try:
        kernels.load()
    except kernels.KernelsUnavailable as exc:
        pytest.fail(f"CUDA is available but the kernel module is not: {exc}")
    return torch.device("cuda")


def gpu_reference(checkpoint, device, dtype=torch.float32, **overrides):
    """The FP32 (or bf16) reference model on ``device`` (same weights as the fast path)."""
    from flash_rt.core.checkpoint import (build_empty_reference, load_reference_weights,
                                          open_checkpoint)
    bundle = open_checkpoint(checkpoint, "pi05", **overrides)
    ref = load_reference_weights(build_empty_reference(bundle.config), bundle.reader)
    return ref.to(device=device, dtype=dtype)


def reference_chunk(ref, obs, noise, device):
    """Normalised action chunk (H, action_dim) of the reference for a prepared observation."""
    with torch.no_grad():
        out = ref.sample_actions(obs.pixels.to(device), obs.view_mask.to(device),
                                 obs.tokens.to(device), obs.token_mask.to(device),
                                 noise.to(device))
    return out[0].float().cpu().numpy()
