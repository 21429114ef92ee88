"""GPU tests of the Pi0.5 fast path: skipped (with the reason) without CUDA; with CUDA but
no kernel module they fail, so a GPU run cannot pass by skipping."""
from __future__ import annotations

import numpy as np
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


@pytest.fixture
def state():
    """A raw robot state of the generated checkpoints' 8 dims."""
    return np.linspace(-0.6, 0.6, 8).astype(np.float32)
