"""The rosbags type store the bag tools use: ROS 2 Kilted's standard messages plus
``flash_rt_ros_msgs/msg/ActionChunk``, read from its ``.msg`` file (so a bag written here
embeds the real definition, and the message and the bags cannot drift apart)."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np

from flash_rt_ros.chunks import MessageTypes

ACTION_CHUNK = "flash_rt_ros_msgs/msg/ActionChunk"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
CLOCK = "rosgraph_msgs/msg/Clock"


def action_chunk_msg_file() -> Path:
    """msg/msg/ActionChunk.msg of this checkout, else the installed interface package's."""
    candidates = [Path(__file__).resolve().parents[2] / "msg" / "msg" / "ActionChunk.msg"]
    prefixes = [sys.prefix] + os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    candidates += [Path(p) / "share" / "flash_rt_ros_msgs" / "msg" / "ActionChunk.msg"
                   for p in prefixes if p]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError("ActionChunk.msg not found in the source tree or in "
                            f"share/flash_rt_ros_msgs of {prefixes}")


@functools.lru_cache(maxsize=1)
def typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(action_chunk_msg_file().read_text(), ACTION_CHUNK))
    return store


def _floats(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).ravel()


@functools.lru_cache(maxsize=1)
def chunk_types() -> MessageTypes:
    """rosbags' classes for :func:`flash_rt_ros.chunks.to_message`."""
    t = typestore().types
    return MessageTypes(chunk=t[ACTION_CHUNK], header=t["std_msgs/msg/Header"],
                        time=t["builtin_interfaces/msg/Time"],
                        duration=t["builtin_interfaces/msg/Duration"], floats=_floats)
