"""A dependency-free progress bar for the long phases (weight writing, loading, conversion).

Full-size loads take tens of seconds; a bar on stderr shows they are moving. It stays
silent when stderr is not a terminal unless FLASH_RT_PROGRESS=1, so logs and CI stay clean.
"""
from __future__ import annotations

import os
import sys
import time

_MIN_INTERVAL_S = 0.2
_WIDTH = 30


class ProgressBar:
    def __init__(self, label: str, total: int, unit: str = "tensors"):
        self.label, self.total, self.unit = label, max(int(total), 1), unit
        self.enabled = sys.stderr.isatty() or os.environ.get("FLASH_RT_PROGRESS") == "1"
        self._start = time.perf_counter()
        self._last = 0.0
        self._done = 0

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        """Matches the ``progress(done, total)`` callbacks of the loaders and writers;
        ``detail`` (e.g. bytes done) is shown after the count."""
        if total is not None:
            self.total = max(int(total), 1)
        self._done = done
        now = time.perf_counter()
        if not self.enabled or (now - self._last < _MIN_INTERVAL_S and done < self.total):
            return
        self._last = now
        filled = int(_WIDTH * done / self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] "
                         f"{done}/{self.total} {self.unit} {detail}{now - self._start:5.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(self._done)
            sys.stderr.write("\n")
            sys.stderr.flush()
