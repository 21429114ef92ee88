"""Camera and joint-state messages into the assembler (no rclpy).

The node's subscription callbacks and the rosbag tools both call these, with rclpy
messages or rosbags messages: the two bindings use the same field names, so one function
serves both and a replay feeds the assembler exactly what the node would.
"""
from __future__ import annotations

from flash_rt_ros.assembly import ObservationAssembler
from flash_rt_ros.chunks import stamp_ns
from flash_rt_ros.encodings import MalformedFrame
from flash_rt_ros.params import NodeParams


class InputClock:
    """An input's time on arrival: its ``header.stamp`` (refused as ``future_stamp`` when it
    is more than ``future_stamp_tolerance_s`` ahead of the clock: a skewed or broken driver
    clock would otherwise make its frame look fresh for as long as the skew lasts), or the
    clock itself (``stamp_source: receipt``)."""

    def __init__(self, p: NodeParams):
        self.receipt = p.stamp_source == "receipt"
        self.max_lead_ns = int(p.future_stamp_tolerance_s * 1e9)

    def stamp(self, msg, now_ns: int) -> int:
        if self.receipt:
            return now_ns
        t = stamp_ns(msg.header.stamp)
        if t - now_ns > self.max_lead_ns:
            raise MalformedFrame("future_stamp", f"stamped {(t - now_ns) / 1e9:.3f} s ahead "
                                 "of the node's clock")
        return t


def write_camera(asm: ObservationAssembler, cam: int, kind: str, msg, stamp: int) -> None:
    """A ``sensor_msgs/Image`` (``kind`` raw) or ``CompressedImage`` into camera ``cam``."""
    if kind == "compressed":
        asm.write_compressed(cam, stamp, msg.format, msg.data)
    else:
        asm.write_raw(cam, stamp, msg.encoding, msg.height, msg.width, msg.step, msg.data)


def write_joint_state(asm: ObservationAssembler, msg, stamp: int) -> None:
    """A ``sensor_msgs/JointState`` (any subset of the configured joints)."""
    asm.write_joint_state(stamp, msg.name, msg.position, msg.velocity, msg.effort)


def joint_sources(p: NodeParams) -> list[str]:
    """Counter/log source name of each joint-state topic."""
    many = len(p.joint_state_topics) > 1
    return [f"joint_state{i if many else ''}" for i in range(len(p.joint_state_topics))]


def malformed_key(source: str, exc: Exception) -> str:
    """Counter key of a refused input: ``malformed/<source>/<cause>``."""
    cause = exc.cause if isinstance(exc, MalformedFrame) else f"error_{type(exc).__name__}"
    return f"malformed/{source}/{cause}"
