"""Give memory the node freed back to the OS, so its resident size tracks what it uses.

glibc keeps what a thread frees in that thread's heap for reuse. 900 KB frames taken on
several executor threads and the temporaries of predict raise that high-water mark each
time the node falls behind its inputs, and the resident size creeps up although nothing
leaks (a 10-minute soak, 3 cameras 640x480: +63 MB, some of it returned later; Python's
object count stayed flat, and a ``malloc_trim`` every few seconds kept it flat). The trim
runs on its own thread, never on the executor: one call takes 1-15 ms (ctypes releases the
GIL meanwhile).

glibc's mmap threshold is also fixed at start-up, at the maximum its dynamic rule reaches
(32 MiB, trim threshold 64 MiB). Left dynamic, the first free of a large mmapped block
(a frame, a predict temporary) raises the threshold, from then on such blocks come from
the heap, and the resident size stepped up by 45-60 MB at a random time, 12 s to over
2 minutes into a run (soak, single-threaded executor). Fixed, they come from the heap from
the first one, so the step happens at start-up; a low fixed threshold (256 KiB) kept the
resident size flat too but doubled the cpu model's predict time (page faults on every
large temporary). Measured on the 2-core CI machine, 2026-12-06 (docs/ros.md, Soak).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

TRIM_PERIOD_S = 10.0
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES  # what the dynamic rule pairs with it


def _libc_function(name: str):
    """A glibc function through ctypes, or None (another C library)."""
    lib = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring); False where there
    is no mallopt or it refused."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def start_trimming(stop: threading.Event, period_s: float = TRIM_PERIOD_S) -> bool:
    """Fix the malloc thresholds, then trim every ``period_s`` until ``stop`` is set; False
    where there is no malloc_trim."""
    fix_malloc_thresholds()
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False

    def loop() -> None:
        while not stop.wait(period_s):
            trim(0)

    threading.Thread(target=loop, name="flash_rt_trim", daemon=True).start()
    return True
