"""One action chunk: how it is computed from an observation and what it records (no rclpy).

The node and the rosbag tools both call :class:`ChunkMaker` (seed rule, view padding,
predict, shape check) and both turn the resulting :class:`ChunkRecord` into an
``ActionChunk`` with :func:`to_message`, the node with rclpy's message classes and the bag
writer with rosbags' (the field names are the same; only the classes differ).
:func:`from_message` reads either back.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from flash_rt_ros.params import MAX_SEED, NodeParams

NS = 1_000_000_000


def stamp_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (or anything with sec/nanosec) to integer ns."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def stamp_seed(base: int, observation_ns: int) -> int:
    """The noise seed of the chunk observed at ``observation_ns`` (``seed_mode: stamp``).

    A hash of (base seed, observation stamp): a chunk's noise depends on its observation
    alone, not on how many chunks ran before it, so a reference recording, a direct replay
    and the live node replaying the same bag draw the same noise for the same observation.
    """
    digest = hashlib.blake2b(f"{int(base)}:{int(observation_ns)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & MAX_SEED


@dataclass
class ChunkRecord:
    """Everything an ``ActionChunk`` carries, as plain Python/numpy values."""

    stamp_ns: int  # observation time: the newest input stamp (header.stamp)
    sequence: int
    seed: int
    camera_topics: tuple
    image_stamps_ns: tuple
    state_stamp_ns: int
    state: np.ndarray  # float32 (state dims,)
    actions: np.ndarray  # float32 (horizon, action dims), robot units
    control_period_ns: int
    joint_names: tuple
    prompt: str
    model: str
    hardware: str
    checkpoint_id: str
    frame_id: str = ""
    inference_latency_ms: float = 0.0
    node_latency_ms: float = 0.0


@dataclass(frozen=True)
class MessageTypes:
    """The message classes of one ROS Python binding (rclpy's or rosbags')."""

    chunk: type
    header: type
    time: type
    duration: type
    floats: Callable  # float32 numpy array -> what the binding stores in a float32[] field


def to_message(rec: ChunkRecord, t: MessageTypes):
    """``flash_rt_ros_msgs/ActionChunk`` with the classes of ``t``."""
    def time_of(ns: int):
        return t.time(sec=int(ns // NS), nanosec=int(ns % NS))

    actions = np.asarray(rec.actions, dtype=np.float32)
    return t.chunk(
        header=t.header(stamp=time_of(rec.stamp_ns), frame_id=rec.frame_id),
        sequence=int(rec.sequence), seed=int(rec.seed),
        camera_topics=list(rec.camera_topics),
        image_stamps=[time_of(s) for s in rec.image_stamps_ns],
        state_stamp=time_of(rec.state_stamp_ns), state=t.floats(rec.state),
        horizon=int(actions.shape[0]), action_dim=int(actions.shape[1]),
        control_period=t.duration(sec=int(rec.control_period_ns // NS),
                                  nanosec=int(rec.control_period_ns % NS)),
        joint_names=list(rec.joint_names), actions=t.floats(actions.ravel()),
        inference_latency_ms=float(rec.inference_latency_ms),
        node_latency_ms=float(rec.node_latency_ms),
        prompt=rec.prompt, model=rec.model, hardware=rec.hardware,
        checkpoint_id=rec.checkpoint_id)


def from_message(msg) -> ChunkRecord:
    """A :class:`ChunkRecord` from an ``ActionChunk`` of either binding."""
    actions = np.asarray(msg.actions, dtype=np.float32)
    if actions.size != int(msg.horizon) * int(msg.action_dim):
        raise ValueError(f"ActionChunk seq {msg.sequence}: {actions.size} actions for "
                         f"horizon {msg.horizon} x action_dim {msg.action_dim}")
    return ChunkRecord(
        stamp_ns=stamp_ns(msg.header.stamp), frame_id=msg.header.frame_id,
        sequence=int(msg.sequence), seed=int(msg.seed),
        camera_topics=tuple(msg.camera_topics),
        image_stamps_ns=tuple(stamp_ns(s) for s in msg.image_stamps),
        state_stamp_ns=stamp_ns(msg.state_stamp),
        state=np.asarray(msg.state, dtype=np.float32),
        actions=actions.reshape(int(msg.horizon), int(msg.action_dim)),
        control_period_ns=stamp_ns(msg.control_period),
        joint_names=tuple(msg.joint_names),
        inference_latency_ms=float(msg.inference_latency_ms),
        node_latency_ms=float(msg.node_latency_ms),
        prompt=msg.prompt, model=msg.model, hardware=msg.hardware,
        checkpoint_id=msg.checkpoint_id)


class ChunkMaker:
    """Runs the policy on one assembled observation: the node's rule for the seed and the
    view padding, the predict call and the output check, in one place."""

    def __init__(self, policy, p: NodeParams, num_views: int, hardware: str,
                 checkpoint_id: str):
        self.policy, self.p = policy, p
        self.num_views = num_views
        self.hardware, self.checkpoint_id = hardware, checkpoint_id
        self.control_period_ns = int(p.control_period_s * 1e9)
        self.sequence = 0

    def seed_for(self, obs) -> int:
        if self.p.seed_mode == "stamp":
            return stamp_seed(self.p.seed, obs.stamp_ns)
        return (self.p.seed + self.sequence) % (MAX_SEED + 1)  # stays a valid seed forever

    def inputs(self, obs, prompt: str) -> dict:
        """The ``predict`` keyword arguments for ``obs``: views padded with None, the seed
        of the next chunk (the images are views of held slots: valid until released, and
        complete: a GPU decode still landing in one is waited for here)."""
        obs.wait_ready()
        images = list(obs.images) + [None] * (self.num_views - len(obs.images))
        return {"images": images, "state": obs.state, "prompt": prompt,
                "seed": self.seed_for(obs)}

    def make(self, obs, prompt: str) -> ChunkRecord:
        """Predict on ``obs`` (its images are views of held slots: valid for this call)."""
        inputs = self.inputs(obs, prompt)
        seed = inputs["seed"]
        t0 = time.perf_counter()
        result = self.policy.predict(**inputs)
        wall_ms = (time.perf_counter() - t0) * 1e3
        actions = result.actions
        if actions.ndim != 2 or actions.shape[1] != len(self.p.joint_names):
            raise ValueError(f"policy returned actions of shape {actions.shape}, expected "
                             f"(horizon, {len(self.p.joint_names)})")
        rec = ChunkRecord(
            stamp_ns=obs.stamp_ns, frame_id=self.p.frame_id, sequence=self.sequence,
            seed=seed, camera_topics=tuple(self.p.camera_topics),
            image_stamps_ns=tuple(obs.image_stamps_ns), state_stamp_ns=obs.state_stamp_ns,
            state=np.asarray(obs.state, dtype=np.float32), actions=actions,
            control_period_ns=self.control_period_ns, joint_names=tuple(self.p.joint_names),
            inference_latency_ms=float(getattr(result, "latency_ms", wall_ms) or wall_ms),
            prompt=prompt, model=self.p.model, hardware=self.hardware,
            checkpoint_id=self.checkpoint_id)
        self.sequence += 1
        return rec
