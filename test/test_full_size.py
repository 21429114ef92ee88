"""Full-size smoke tests: real shapes end to end on the CPU (Pi0.5: 13.4 GB of weights;
GR00T N1.7: 6.9 GB of bf16 weights, ~13 GB in FP32).

Slow (minutes on 2 cores, 13.4 GB of disk and ~15 GB of RAM), so it runs only with
FLASH_RT_FULL=1; bench/reference_cpu.py --preset full reports its time and peak RAM.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import flash_rt
from flash_rt.tools.make_checkpoint import make_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("FLASH_RT_FULL") != "1", reason="full-size model: set FLASH_RT_FULL=1")]


def test_full_size_pi05_predicts(tmp_path, camera_images):
    ckpt = make_checkpoint(tmp_path, "pi05", "full")
    policy = flash_rt.load_model(ckpt, model="pi05", hardware="cpu", num_views=2,
                                 tokenizer=None)
    cfg = policy.config
    assert (cfg.preset, cfg.prefix.width, cfg.horizon) == ("full", 2048, 50)
    # No tokenizer ships with a generated full checkpoint: feed token ids directly.
    r = policy.predict(camera_images[:2], token_ids=[2] + list(range(100, 160)), seed=0)
    assert r.actions.shape == (50, 8) and r.actions_normalized.shape == (50, 32)
    assert np.isfinite(r.actions_normalized).all()
    assert np.abs(r.actions_normalized).max() < 1e3


def test_full_size_groot_predicts(tmp_path, camera_images):
    import torch

    ckpt = make_checkpoint(tmp_path, "groot", "full", dtype=torch.bfloat16)  # as released
    policy = flash_rt.load_model(ckpt, model="groot", hardware="cpu")
    cfg = policy.config
    assert (cfg.preset, cfg.text.width, cfg.text.num_layers, cfg.dit.num_layers) == (
        "full", 2048, 16, 32)
    spec = policy.embodiment
    r = policy.predict(camera_images[:2], np.zeros(spec.state_dims, np.float32),
                       prompt="pick up the red block", seed=0)
    assert r.actions.shape == (spec.action_horizon, spec.action_dims)
    assert r.actions_normalized.shape == (cfg.action_horizon, cfg.max_action_dim)
    assert np.isfinite(r.actions_normalized).all()
    assert np.abs(r.actions_normalized).max() < 1e3
