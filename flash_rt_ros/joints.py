"""Where the configured joints sit in a ``JointState.name`` list, cached per layout.

Robots often publish joints in several JointState messages (an arm driver and a gripper
driver, on one topic or several), each with its own stable name order. Building the
name -> index mapping allocates, so it is done once per distinct name list and reused:
a hit costs one list comparison (no allocation), which is the hot path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flash_rt_ros.encodings import MalformedFrame


@dataclass(frozen=True)
class JointLayout:
    """Message positions ``src`` of configured joints, their state indices ``dst``, and a
    preallocated ``gather`` buffer of the same length."""

    src: np.ndarray
    dst: np.ndarray
    gather: np.ndarray


class JointLayouts:
    """Layouts of the last ``capacity`` distinct name lists (oldest evicted first)."""

    def __init__(self, joint_names, capacity: int = 8):
        self._index = {n: i for i, n in enumerate(joint_names)}
        self._capacity = capacity
        self._entries: list[tuple[list, JointLayout]] = []

    def layout(self, names) -> JointLayout:
        """The layout of ``names`` (a list, as rclpy gives it); raises on duplicate names."""
        for cached, layout in self._entries:
            if names == cached:
                return layout
        names = list(names)
        src, dst, seen = [], [], set()
        for k, name in enumerate(names):
            if name in seen:  # which value would be the joint's? refuse rather than guess
                raise MalformedFrame("duplicate_joint", name)
            seen.add(name)
            j = self._index.get(name)
            if j is not None:  # joints the policy does not use are ignored
                src.append(k)
                dst.append(j)
        layout = JointLayout(np.asarray(src, np.intp), np.asarray(dst, np.intp),
                             np.zeros(len(src), np.float64))
        if len(self._entries) >= self._capacity:
            self._entries.pop(0)
        self._entries.append((names, layout))
        return layout
