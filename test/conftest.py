"""Shared fixtures: tiny checkpoints generated on the spot (nothing is downloaded)."""
from __future__ import annotations

import numpy as np
import pytest

from flash_rt.tools.make_checkpoint import make_checkpoint

from camera_frames import textured_frame


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running (full-size model); "
                                       "enable with FLASH_RT_FULL=1")


@pytest.fixture(scope="session")
def tiny_pi05_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("pi05_tiny"), "pi05", "tiny", seed=0)


@pytest.fixture(scope="session")
def small_pi05_ckpt(tmp_path_factory):
    """Tiny vision and depth with the full Gemma head shape (attention wider than the MLPs)."""
    return make_checkpoint(tmp_path_factory.mktemp("pi05_small"), "pi05", "small", seed=0)


@pytest.fixture(scope="session")
def tiny_pi05_openpi_ckpt(tmp_path_factory):
    """tiny_pi05_ckpt's weights (same seed) as an openpi JAX checkpoint (params/ + assets/)."""
    return make_checkpoint(tmp_path_factory.mktemp("pi05_tiny_openpi"), "pi05", "tiny", seed=0,
                           fmt="openpi")


@pytest.fixture(scope="session")
def tiny_pi0_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("pi0_tiny"), "pi0", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_pi0_openpi_ckpt(tmp_path_factory):
    """tiny_pi0_ckpt's weights (same seed) as an openpi JAX checkpoint (params/ + assets/)."""
    return make_checkpoint(tmp_path_factory.mktemp("pi0_tiny_openpi"), "pi0", "tiny", seed=0,
                           fmt="openpi")


@pytest.fixture(scope="session")
def tiny_groot_ckpt(tmp_path_factory):
    """GR00T N1.7 tiny preset in the released sharded layout, one embodiment (2 cameras,
    arm + gripper state and actions)."""
    return make_checkpoint(tmp_path_factory.mktemp("groot_tiny"), "groot", "tiny", seed=0)


@pytest.fixture
def camera_images():
    """Realistic-ish frames: smooth gradients plus texture, two different sizes."""
    rng = np.random.default_rng(7)
    return [textured_frame(rng, 480, 640, 0), textured_frame(rng, 360, 480, 90),
            textured_frame(rng, 224, 224, 180)]


@pytest.fixture(scope="session")
def small_pi0_ckpt(tmp_path_factory):
    """Pi0 with tiny vision and depth and the full Gemma head shape."""
    return make_checkpoint(tmp_path_factory.mktemp("pi0_small"), "pi0", "small", seed=0)
