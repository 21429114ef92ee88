"""Give memory the node freed back to the OS, so its resident size tracks what it uses.

glibc keeps what a thread frees in that thread's heap for reuse. 900 KB frames taken on
several executor threads and the temporaries of predict raise that high-water mark each
time the node falls behind its inputs, and the resident size creeps up although nothing
leaks (a 10-minute soak, 3 cameras 640x480: +63 MB, some of it returned later; Python's
object count stayed flat, and a ``malloc_trim`` every few seconds kept it flat). The trim
runs on its own thread, never on the executor: one call takes 1-15 ms (ctypes releases the
GIL meanwhile).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

TRIM_PERIOD_S = 10.0


def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library: nothing to do)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def start_trimming(stop: threading.Event, period_s: float = TRIM_PERIOD_S) -> bool:
    """Trim every ``period_s`` until ``stop`` is set; False where there is no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False

    def loop() -> None:
        while not stop.wait(period_s):
            trim(0)

    threading.Thread(target=loop, name="flash_rt_trim", daemon=True).start()
    return True
