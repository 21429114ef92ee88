"""The node's inference thread: one job at a time, never a queue.

The tick hands over the newest observation only when the worker is idle (a tick that
finds it busy is counted as an overrun and skipped), so a chunk is always computed from
the newest observation and the subscriptions never wait for the model.
"""
from __future__ import annotations

import os
import threading
import traceback
from typing import Callable

# Diagnosis only: a file name here makes the thread profile its jobs (cProfile, wall time,
# GIL waits included) and rewrite the file with the cumulative top functions every
# PROFILE_EVERY jobs, so the profile survives however the node is stopped.
PROFILE_ENV = "FLASH_RT_ROS_PROFILE"
PROFILE_EVERY = 10


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
        path = os.environ.get(PROFILE_ENV)
        if not path:
            return self._serve_jobs(self._run)
        import cProfile
        import pstats

        prof, jobs = cProfile.Profile(), [0]

        def profiled(job):
            prof.runcall(self._run, job)
            jobs[0] += 1
            if jobs[0] % PROFILE_EVERY == 0:
                with open(path, "w") as f:
                    f.write(f"{jobs[0]} jobs\n")
                    pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(45)
        return self._serve_jobs(profiled)

    def _serve_jobs(self, run: Callable) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            job, self._job = self._job, None
            try:
                run(job)
            except Exception:  # noqa: BLE001 - the thread must outlive any one job
                traceback.print_exc()  # the node's run() logs its own; this is the backstop
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
