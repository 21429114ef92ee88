"""Shared builders for the DDS tests: params files and input regeneration."""
from __future__ import annotations

import time

import numpy as np
import yaml

from flash_rt_ros.assembly import ObservationAssembler
from flash_rt_ros.messages import stamp_ns
from flash_rt_ros.synthetic import DEFAULT_JOINTS, encode, frame

NODE = "flash_rt_policy"
CHUNK_TOPIC = f"/{NODE}/action_chunk"  # the node's chunks, outside a namespace


def write_params(path, **overrides) -> str:
    params = {"camera_topics": ["/cam0/image_raw", "/cam1/image_raw"],
              "joint_names": list(DEFAULT_JOINTS), "rate_hz": 5.0, "prompt": "pick",
              "max_observation_age_s": 1.0, "diagnostics_period_s": 0.5}
    params.update(overrides)
    path.write_text(yaml.safe_dump({NODE: {"ros__parameters": params}}))
    return str(path)


def node_args(params_file, *extra) -> list[str]:
    return ["--ros-args", "--params-file", params_file, *extra]


def regenerate_images(chunk, encodings, height, width) -> list[np.ndarray]:
    """The exact RGB images the node fed for ``chunk``: regenerate, encode, decode again."""
    asm = ObservationAssembler(len(encodings), ["j"], state_source="none")
    for cam, (enc, st) in enumerate(zip(encodings, chunk.image_stamps)):
        s = stamp_ns(st)
        fmt, data, step = encode(frame(cam, s, height, width), enc)
        if enc in ("jpeg", "png"):
            asm.write_compressed(cam, s, fmt, data)
        else:
            asm.write_raw(cam, s, fmt, height, width, step, data)
    obs = asm.snapshot(max(stamp_ns(st) for st in chunk.image_stamps), 1 << 62)
    return [im.copy() for im in obs.images]


def actions_of(chunk) -> np.ndarray:
    return np.asarray(chunk.actions, dtype=np.float32).reshape(chunk.horizon, chunk.action_dim)


def assert_publishing_stops(listener, skip_counter: str, timeout: float, quiet_s: float = 2.0):
    """Chunks flow, then an input goes bad: the node counts ``skip_counter`` and, from then
    on, publishes nothing (checked over ``quiet_s``)."""
    listener.wait_for(lambda l: len(l.chunks) >= 1, timeout, "chunks before the fault")
    listener.wait_for(lambda l: int(l.latest_diag().get(skip_counter, 0)) >= 3, timeout,
                      f"{skip_counter} skips")
    with listener.lock:
        n = len(listener.chunks)
    time.sleep(quiet_s)
    assert len(listener.chunks) == n, f"chunks kept coming after {skip_counter} began"
