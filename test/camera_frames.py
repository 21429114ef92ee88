"""Realistic-ish synthetic camera frames (smooth gradients plus texture), shared by the
test fixtures and the CPU diagnostics so both feed the same pixels."""
from __future__ import annotations

import numpy as np


def textured_frame(rng: np.random.Generator, h: int, w: int, phase: int) -> np.ndarray:
    """(h, w, 3) uint8: an x / y gradient and a diagonal ramp shifted by ``phase``, plus
    uniform noise in [0, 40) drawn from ``rng``."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy + phase) % 256)], -1)
    noise = rng.integers(0, 40, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)
