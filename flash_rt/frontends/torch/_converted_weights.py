"""Checkpoint -> converted weight buffers on a device, through the on-disk weight cache.

The GPU frontends call this with their CUDA device; it takes any device, so the same code
runs (and is tested and timed) on the CPU too. The checkpoint is read through its
:class:`~flash_rt.core.checkpoint.WeightSource`, so safetensors and openpi checkpoints
reach the same buffers.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from flash_rt.core.checkpoint import CheckpointBundle, expected_layout, plan_keys
from flash_rt.core.progress import ProgressBar
from flash_rt.core.weight_cache import CacheKey, WeightCache
from flash_rt.core.weight_spec import WeightSpec, convert

log = logging.getLogger(__name__)


def load_converted_weights(bundle: CheckpointBundle, spec: WeightSpec, cache: WeightCache,
                           key: CacheKey, device: torch.device) -> dict[str, torch.Tensor]:
    """The buffers of ``spec`` on ``device``: from ``cache`` under ``key`` when a verified
    entry exists, else converted from the checkpoint (progress bar) and stored there."""
    layout = expected_layout(bundle.config)
    spec.check_layout(layout)
    plan = plan_keys(bundle.reader, layout)
    cached = cache.load("weights", key)
    if cached is not None:
        log.info("weights from cache %s", cache.path("weights", key))
        return {k: v.to(device) for k, v in cached.items()}
    reader = bundle.reader
    total_bytes = sum(int(np.prod(reader.shape(plan.source[k]))) *
                      reader.dtype(plan.source[k]).itemsize for k in spec.keys())
    bar = ProgressBar("converting weights", len(spec.items))
    read = [0]

    def get(canon: str) -> torch.Tensor:
        t = reader.get(plan.source[canon])
        read[0] += t.numel() * t.element_size()
        return t.to(device).float()

    def progress(done: int, total: int) -> None:
        bar.update(done, total, detail=f"{read[0] / 2**30:.1f}/{total_bytes / 2**30:.1f} GiB ")

    start = time.perf_counter()
    weights = convert(spec, get, progress=progress)
    bar.close()
    log.info("converted %d checkpoint tensors into %d buffers in %.1f s", len(spec.keys()),
             len(weights), time.perf_counter() - start)
    cache.store("weights", key, weights)
    return weights
