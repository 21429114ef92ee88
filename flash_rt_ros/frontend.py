"""Build the policy the node drives, and name the checkpoint it came from.

The node only needs an object with ``predict(images=, state=, prompt=, seed=)`` returning
``.actions`` (horizon, action_dims) and ``.latency_ms``, plus ``.config`` with
``horizon``/``model``. Keeping construction behind one factory lets the same node drive
the cpu reference and the GPU frontends, and lets tests inject a stand-in.
"""
from __future__ import annotations

import gc
import sys

import numpy as np

from flash_rt_ros.params import NodeParams


def load_policy(p: NodeParams, num_views: int, action_dims: int):
    """Default factory: ``flash_rt.load_model`` with the node's parameters."""
    import flash_rt

    return flash_rt.load_model(
        p.checkpoint_dir, model=p.model, framework=p.framework, hardware=p.hardware,
        num_views=num_views, horizon=p.horizon or None, num_steps=p.num_steps or None,
        action_dims=action_dims, embodiment=p.embodiment or None,
        asset_id=p.asset_id or None)


def hardware_name(policy, requested: str) -> str:
    """The resolved hardware (``auto`` becomes what the engine picked, when it says)."""
    value = getattr(policy, "hardware", None)
    return value if isinstance(value, str) and value else requested


def warm_up(policy, num_views: int, state_dims: int, prompt: str, seed: int) -> None:
    """One predict on blank inputs before the first tick.

    The first calls into a freshly loaded model are much slower (allocator, kernel
    selection); paying that at start-up keeps the first real chunk within budget. Only for
    a policy that cannot calibrate on this call (``calibration.may_warm_up``): an FP8 fast
    path without scales would take them from these blank frames.
    """
    blank = np.zeros((224, 224, 3), dtype=np.uint8)
    policy.predict(images=[blank] * num_views, state=np.zeros(state_dims, dtype=np.float32),
                   prompt=prompt, seed=seed)


def release_memory() -> None:
    """Return what a dropped policy held: Python objects now, and the CUDA caching
    allocator's blocks (the GPU memory another process could use) when CUDA was used."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
