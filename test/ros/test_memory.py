"""flash_rt_ros.memory on this machine's glibc: the thresholds are set and the trim thread
runs until told to stop (the resident-size effect itself is measured by the soak)."""
from __future__ import annotations

import threading

import pytest

from flash_rt_ros import memory


@pytest.mark.skipif(memory._libc_function("mallopt") is None, reason="needs glibc's mallopt")
def test_thresholds_are_accepted():
    assert memory.fix_malloc_thresholds() is True


@pytest.mark.skipif(memory._libc_function("malloc_trim") is None,
                    reason="needs glibc's malloc_trim")
def test_trim_thread_stops_with_its_event():
    before = set(threading.enumerate())
    stop = threading.Event()
    assert memory.start_trimming(stop, period_s=0.01) is True
    (thread,) = [t for t in threading.enumerate()
                 if t not in before and t.name == "flash_rt_trim"]
    stop.set()
    thread.join(2.0)
    assert not thread.is_alive()
