"""Host buffers the frontend reads from: page-locked when CUDA is there, plain otherwise.

The contract with the frontends is deliberately just numpy: every image handed to
``policy.predict`` is a C-contiguous uint8 HxWx3 array that stays valid and unchanged for
the whole call. On a CUDA machine it is a view of pinned (page-locked) torch memory, so a
GPU frontend can ``torch.from_numpy(...).to(device, non_blocking=True)`` without an extra
staging copy; the cpu frontend just sees an ordinary array.
"""
from __future__ import annotations

import importlib.util

import numpy as np

_PINNED: bool | None = None


def pinned_available() -> bool:
    """True when torch with a usable CUDA device is importable (checked once)."""
    global _PINNED
    if _PINNED is None:
        _PINNED = False
        if importlib.util.find_spec("torch") is not None:
            try:
                import torch

                _PINNED = bool(torch.cuda.is_available())
            except Exception:  # a broken CUDA install must not stop the node
                _PINNED = False
    return _PINNED


def host_buffer(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    """Allocate one zeroed, C-contiguous host buffer (pinned if CUDA is available)."""
    if pinned_available():
        import torch

        tdtype = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32,
                  np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
        return torch.zeros(shape, dtype=tdtype).pin_memory().numpy()
    return np.zeros(shape, dtype=dtype)
