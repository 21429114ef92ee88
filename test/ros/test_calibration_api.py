"""The node's calibration logic against the real engine classes, without a GPU.

The GPU frontend (flash_rt/frontends/torch/_pi05_gpu.py) cannot run here, but its
calibration bookkeeping is plain Python: an instance made without ``__init__`` and given
the real processor of a tiny checkpoint (and stand-ins for the CUDA parts it never
reaches) shows that it exposes what the node relies on, and that ``recalibrate`` takes
the observations the node builds, through its own key and input checks.
"""
from __future__ import annotations

import inspect
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fake_policy import CalibratingFakePolicy  # noqa: E402

import flash_rt  # noqa: E402
from flash_rt.frontends.torch._pi05_gpu import Pi05GpuFrontend  # noqa: E402
from flash_rt_ros.calibration import (CALIBRATED, CAPTURING, COLLECTING, NOT_APPLICABLE,  # noqa: E402
                                      Calibration, has_calibration, may_warm_up)
from flash_rt_ros.chunks import ChunkMaker  # noqa: E402
from flash_rt_ros.params import NodeParams  # noqa: E402


@pytest.fixture(scope="module")
def cpu_policy(tiny_pi05_ckpt):
    return flash_rt.load_model(tiny_pi05_ckpt, model="pi05", hardware="cpu", num_views=2)


def _gpu_frontend(cpu_policy, cached_scales=None):
    """A Pi05GpuFrontend with the real processor; CUDA-only members are stand-ins that
    record what the calibration code hands them."""
    gpu = Pi05GpuFrontend.__new__(Pi05GpuFrontend)
    gpu.config, gpu.processor = cpu_policy.config, cpu_policy.processor
    gpu._seeds = np.random.default_rng(0)
    gpu.scales = SimpleNamespace(scales=torch.zeros(4))
    gpu._calibration_key = lambda: "key"
    gpu._cache = SimpleNamespace(load=lambda kind, key: cached_scales)
    gpu.calibrated_on = []

    def _calibrate(frames, percentile):  # the device part of calibration
        gpu.calibrated_on.append((frames, percentile))
        gpu.calibrated = True
        return {"frames": len(frames)}

    gpu._calibrate = _calibrate
    gpu.predicted = []
    gpu.predict = lambda **kw: gpu.predicted.append(kw)
    gpu.calibrated = gpu._load_calibration()  # what _load does at the end
    return gpu


def _observation(seed):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    return SimpleNamespace(images=images, state=rng.normal(size=8).astype(np.float32),
                           stamp_ns=1_000_000_000 + seed, wait_ready=lambda: None)


def test_the_fake_mirrors_the_gpu_frontends_calibration_api():
    real = inspect.signature(Pi05GpuFrontend.recalibrate)
    fake = inspect.signature(CalibratingFakePolicy.recalibrate)
    assert list(real.parameters) == list(fake.parameters) == ["self", "observations",
                                                              "percentile"]
    assert real.parameters["percentile"].default == fake.parameters["percentile"].default


def test_gpu_frontend_without_cached_scales_collects_real_observations(cpu_policy):
    gpu = _gpu_frontend(cpu_policy)
    assert has_calibration(gpu) and not gpu.calibrated
    assert not may_warm_up(gpu), "a warm-up predict would calibrate on blank frames"
    cal = Calibration(gpu, frames=2)
    assert (cal.state, cal.source, cal.has_scales) == (COLLECTING, "none", False)
    p = NodeParams(joint_names=tuple(f"joint{i}" for i in range(8)),
                   camera_topics=("/a", "/b"))
    maker = ChunkMaker(gpu, p, 2, "hopper", "ckpt")
    for seed in (1, 2):
        obs = _observation(seed)
        done = cal.add(maker.inputs(obs, "pick up the cube"), obs.stamp_ns)
    assert done
    cal.run()
    frames, percentile = gpu.calibrated_on[0]
    assert len(frames) == 2 and percentile == 99.9
    raw, noise = frames[0]  # through the real recalibrate: prepared, with seeded noise
    assert raw.images[0].shape == (48, 64, 3) and raw.images[0].mean() > 0
    assert noise.shape == (1, gpu.config.horizon, gpu.config.action_dim)
    assert (cal.state, cal.source, cal.newest_stamp_ns) == (CALIBRATED, "observations",
                                                            1_000_000_002)
    assert len(gpu.predicted) == 1, "one capture predict on the newest observation"


def test_gpu_frontend_with_cached_scales(cpu_policy):
    cached = {"scales": torch.ones(4), "frames": torch.tensor([8], dtype=torch.int32)}
    gpu = _gpu_frontend(cpu_policy, cached_scales=cached)
    assert gpu.calibrated and may_warm_up(gpu)
    cal = Calibration(gpu, frames=5)
    assert (cal.state, cal.source, cal.has_scales) == (CAPTURING, "cache", True)


def test_cpu_reference_has_no_calibration(cpu_policy):
    assert not has_calibration(cpu_policy) and may_warm_up(cpu_policy)
    cal = Calibration(cpu_policy, frames=5)
    assert cal.state == NOT_APPLICABLE and cal.has_scales
    ok, why = cal.request()
    assert not ok and "nothing to calibrate" in why


def test_recalibration_keeps_the_current_scales_until_it_is_done():
    fake = CalibratingFakePolicy(2, 8, cached=True)
    cal = Calibration(fake, frames=2)
    cal.captured()
    ok, _ = cal.request()
    assert ok and cal.state == CALIBRATED  # taken up by the worker at its next observation
    cal.start_requested()
    assert cal.collecting and cal.has_scales  # chunks go on meanwhile
    obs = {"images": [np.ones((4, 4, 3), np.uint8)] * 2, "state": np.zeros(8), "prompt": "x",
           "seed": 0}
    assert not cal.add(obs, 1) and cal.add(obs, 2)
    cal.run()
    assert fake.calibrations == 1 and cal.count == 1 and cal.source == "observations"
