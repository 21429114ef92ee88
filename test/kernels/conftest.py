"""Fixtures of the kernel tests (helpers live in kutil.py).

GPU tests use the ``fk`` fixture: it skips (with the reason) when CUDA is absent and
fails when CUDA is present but the module is not built, so a GPU run cannot pass by
silently skipping everything.
"""
from __future__ import annotations

import pytest
import torch

from flash_rt import kernels


@pytest.fixture(scope="session")
def fk():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available: GPU kernel tests need an NVIDIA GPU (run on the device)")
    try:
        return kernels.load()
    except kernels.KernelsUnavailable as exc:
        pytest.fail(f"CUDA is available but the kernel module is not: {exc}")


@pytest.fixture()
def stream(fk):
    return torch.cuda.current_stream().cuda_stream


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


