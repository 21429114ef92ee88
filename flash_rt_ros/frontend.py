"""Build the policy the node drives, and name the checkpoint it came from.

The node only needs an object with ``predict(images=, state=, prompt=, seed=)`` returning
``.actions`` (horizon, action_dims) and ``.latency_ms``, plus ``.config`` with
``horizon``/``model``. Keeping construction behind one factory lets the same node drive
the cpu reference and the GPU frontends, and lets tests inject a stand-in.
"""
from __future__ import annotations

import hashlib
import os

from flash_rt_ros.params import NodeParams


def load_policy(p: NodeParams, num_views: int, action_dims: int):
    """Default factory: ``flash_rt.load_model`` with the node's parameters."""
    import flash_rt

    return flash_rt.load_model(
        p.checkpoint_dir, model=p.model, framework=p.framework, hardware=p.hardware,
        num_views=num_views, horizon=p.horizon or None, num_steps=p.num_steps or None,
        action_dims=action_dims)


def hardware_name(policy, requested: str) -> str:
    """The resolved hardware (``auto`` becomes what the engine picked, when it says)."""
    for attr in ("hardware", "backend"):
        value = getattr(policy, attr, None)
        if isinstance(value, str) and value:
            return value
    return requested


def checkpoint_id(ckpt_dir: str, chunk: int = 1 << 20) -> str:
    """A short, cheap fingerprint of a checkpoint directory.

    Hashes the sizes plus the first and last MiB of model.safetensors (its header names
    every tensor and offset) and the whole norm_stats.json: changes to weights layout,
    normalisation or a re-export show up, and a multi-GB file costs two reads of 1 MiB.
    """
    h = hashlib.sha256()
    found = False
    for name in ("model.safetensors", "norm_stats.json"):
        path = os.path.join(ckpt_dir, name)
        if not os.path.isfile(path):
            continue
        found = True
        size = os.path.getsize(path)
        h.update(f"{name}:{size}:".encode())
        with open(path, "rb") as fh:
            if name.endswith(".json") or size <= 2 * chunk:
                h.update(fh.read())
            else:
                h.update(fh.read(chunk))
                fh.seek(size - chunk)
                h.update(fh.read(chunk))
    if not found:
        return ""
    return f"{os.path.basename(os.path.normpath(ckpt_dir))}@{h.hexdigest()[:16]}"
