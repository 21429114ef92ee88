"""Counters, rates and once-per-cause logging for the node's diagnostics (latency windows:
flash_rt.core.latency.LatencyTracker)."""
from __future__ import annotations

import threading
import time
from collections import defaultdict


class Counters:
    """Named event counts (thread-safe), e.g. ``malformed/camera0/truncated``."""

    def __init__(self):
        self._c: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def inc(self, key: str, n: int = 1) -> int:
        with self._lock:
            self._c[key] += n
            return self._c[key]

    def get(self, key: str) -> int:
        with self._lock:
            return self._c.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._c)


class OncePerCause:
    """Let a message through the first time a cause is seen, then once per ``period_s``.

    Bad inputs usually repeat at camera rate; logging each one would flood the console
    and cost more than the decode itself.
    """

    def __init__(self, period_s: float = 10.0):
        self._period = period_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def should_log(self, cause: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(cause)
            if last is not None and now - last < self._period:
                return False
            self._last[cause] = now
            return True


class RateMeter:
    """Events per second over a sliding window of timestamps."""

    def __init__(self, window_s: float = 5.0):
        self._window = window_s
        self._times: list[float] = []
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._times.append(now)
            cut = now - self._window
            while self._times and self._times[0] < cut:
                self._times.pop(0)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._times if t >= now - self._window]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)
