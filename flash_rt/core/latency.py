"""Rolling latency statistics for ``get_latency_stats()`` and the node's diagnostics."""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

DEFAULT_WINDOW = 10_000


class LatencyTracker:
    """Keeps the last ``window`` samples (ms) so a long-running node's memory stays flat.

    Thread-safe: the node adds from its inference thread and reads from the executor.
    """

    def __init__(self, window: int = DEFAULT_WINDOW):
        self._samples: deque[float] = deque(maxlen=window)
        self._count = 0
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(float(ms))
            self._count += 1

    def stats(self) -> dict[str, float]:
        """count (all time) plus mean/p50/p95/p99/max over the window, in ms."""
        with self._lock:
            a = np.fromiter(self._samples, dtype=np.float64, count=len(self._samples))
            count = self._count
        if not a.size:
            return {"count": 0, "mean": float("nan"), "p50": float("nan"), "p95": float("nan"),
                    "p99": float("nan"), "max": float("nan")}
        p50, p95, p99 = np.percentile(a, [50, 95, 99])
        return {"count": count, "mean": float(a.mean()), "p50": float(p50),
                "p95": float(p95), "p99": float(p99), "max": float(a.max())}
