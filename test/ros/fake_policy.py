"""Test double for the node's own logic (tests only; never used by the package).

Deterministic actions from the inputs and seed, an optional deliberate delay to prove
the subscriptions keep running during inference, and a record of every call.

:class:`CalibratingFakePolicy` adds the GPU frontends' calibration API
(``flash_rt/frontends/torch/_pi05_gpu.py``): ``calibrated``, ``recalibrate(observations,
percentile)`` taking dicts of predict arguments (unknown keys refused the same way), and a
``predict`` that calibrates on its own inputs when it has no scales. Each event is printed
(``[fake] ...``) so a test can read from the node's log what was calibrated on what.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

DEFAULT_PERCENTILE = 99.9


def fake_actions(images, state, seed, horizon, action_dims):
    """What FakePolicy.predict returns: a pure function of its inputs (float32)."""
    means = [float(im.mean()) if im is not None else -1.0 for im in images]
    t = np.arange(horizon, dtype=np.float64)[:, None]
    j = np.arange(action_dims, dtype=np.float64)[None, :]
    out = (np.asarray(state, dtype=np.float64)[None, :action_dims] + 0.001 * t
           + sum(means) / 1000.0 + 1e-6 * seed + 0.0 * j)
    return out.astype(np.float32)


class FakePolicy:
    def __init__(self, num_views, action_dims, horizon=8, delay_s=0.0):
        self.config = SimpleNamespace(horizon=horizon, num_views=num_views, action_dim=32,
                                      model="fake", preset="test")
        self.hardware = "fake"
        self.action_dims = action_dims
        self.delay_s = delay_s

    def predict(self, images, state, prompt="", seed=None, noise=None):
        t0 = time.perf_counter()
        assert len(images) == self.config.num_views
        actions = fake_actions(images, state, seed or 0, self.config.horizon, self.action_dims)
        if self.delay_s:
            time.sleep(self.delay_s)
        return SimpleNamespace(actions=actions, latency_ms=(time.perf_counter() - t0) * 1e3)


def _image_mean(images) -> float:
    return float(np.mean([im.mean() for im in images if im is not None]))


class CalibratingFakePolicy(FakePolicy):
    """FakePolicy with the FP8 frontends' calibration API (``cached``: scales at load)."""

    def __init__(self, *args, cached=False, capture_fails=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.calibrated = bool(cached)
        self.calibrations = 0
        self.capture_fails = capture_fails  # every predict fails as after a failed capture

    def predict(self, images, state, prompt="", seed=None, noise=None):
        if self.capture_fails:
            from flash_rt.core.errors import GraphCaptureError
            print("[fake] graph capture failed", flush=True)
            raise GraphCaptureError("CUDA graph capture failed (fake); no capture can "
                                    "succeed again in this process")
        if not self.calibrated:  # what the GPU frontend does: calibrate on this call
            print(f"[fake] predict calibrated on its own inputs (image mean "
                  f"{_image_mean(images):.1f})", flush=True)
            self.calibrated = True
        print(f"[fake] predict (image mean {_image_mean(images):.1f})", flush=True)
        return super().predict(images, state, prompt=prompt, seed=seed, noise=noise)

    def recalibrate(self, observations, percentile=DEFAULT_PERCENTILE):
        means = []
        for obs in observations:
            obs = dict(obs)
            for key in ("images", "state", "prompt", "token_ids", "seed", "noise"):
                obs.pop(key, None)
            if obs:
                raise TypeError(f"unknown observation keys {sorted(obs)}")
        for obs in observations:
            means.append(_image_mean(obs["images"]))
        self.calibrated = True
        self.calibrations += 1
        print(f"[fake] recalibrate #{self.calibrations}: {len(observations)} frames, image "
              f"means {min(means):.1f}..{max(means):.1f}", flush=True)
        return {"frames": len(observations), "percentile": percentile}
