"""Test double for the node's own logic (tests only; never used by the package).

Deterministic actions from the inputs and seed, an optional deliberate delay to prove
the subscriptions keep running during inference, and a record of every call.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np


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
