"""How close two action chunks are: the one definition every comparison uses (tests, the
rosbag ``compare`` command, precision reports)."""
from __future__ import annotations

import numpy as np


def cosine(a, b) -> float:
    """Cosine of the flattened arrays in float64; exactly 1.0 for identical arrays (not
    1 - rounding), 0.0 when either is all zeros."""
    a = np.ravel(np.asarray(a)).astype(np.float64)
    b = np.ravel(np.asarray(b)).astype(np.float64)
    if np.array_equal(a, b):
        return 1.0
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def max_abs(a, b) -> float:
    """Largest elementwise |a - b|, in float64."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
