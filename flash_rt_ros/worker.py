"""The node's inference thread: one job at a time, never a queue.

The tick hands over the newest observation only when the worker is idle (a tick that
finds it busy is counted as an overrun and skipped), so a chunk is always computed from
the newest observation and the subscriptions never wait for the model.
"""
from __future__ import annotations

import threading
from typing import Callable


class InferenceWorker:
    """Runs ``run(job)`` on its own (daemon) thread; ``finish(job)`` always follows it."""

    def __init__(self, run: Callable, finish: Callable, name: str = "flash_rt_infer"):
        self._run, self._finish = run, finish
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._stop = False
        self._job = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop

    def submit(self, job) -> None:
        """Hand over ``job``; the caller checked ``busy`` first (one job at a time)."""
        self._job = job
        self._idle.clear()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            job, self._job = self._job, None
            try:
                self._run(job)
            finally:
                self._finish(job)
                self._idle.set()

    def stop(self, timeout_s: float = 1.0) -> bool:
        """Stop the thread; True if it finished within ``timeout_s`` (a predict still
        running cannot be interrupted)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
