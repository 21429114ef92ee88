"""Build the node's output messages (ActionChunk, JointTrajectory, DiagnosticArray)."""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from flash_rt_ros.chunks import NS, ChunkRecord, MessageTypes, stamp_ns, to_message
from flash_rt_ros.execution import Trajectory
from flash_rt_ros_msgs.msg import ActionChunk

__all__ = ["NS", "stamp_ns", "to_time", "to_duration", "floats", "action_chunk",
           "joint_trajectory", "diagnostics"]


def to_time(ns: int) -> Time:
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


def to_duration(ns: int) -> Duration:
    return Duration(sec=int(ns // NS), nanosec=int(ns % NS))


def floats(a: np.ndarray) -> array.array:
    """float32 array to the array.array a ROS float32[] field stores (one memcpy)."""
    out = array.array("f")
    out.frombytes(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return out


RCLPY_TYPES = MessageTypes(chunk=ActionChunk, header=Header, time=Time, duration=Duration,
                           floats=floats)


def action_chunk(rec: ChunkRecord) -> ActionChunk:
    """Everything needed to reproduce and audit one chunk (node_latency_ms set at publish)."""
    return to_message(rec, RCLPY_TYPES)


def joint_trajectory(traj: Trajectory, joint_names, frame_id: str) -> JointTrajectory:
    """A planned trajectory (``execution.py``: stamp, point times, blended positions) as
    ros2_control's joint_trajectory_controller takes it."""
    msg = JointTrajectory()
    msg.header.stamp = to_time(traj.stamp_ns)
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    pts = []
    for t in range(traj.positions.shape[0]):
        pt = JointTrajectoryPoint()
        pt.positions = traj.positions[t].tolist()
        pt.time_from_start = to_duration(int(traj.times_ns[t]))
        pts.append(pt)
    msg.points = pts
    return msg


def diagnostics(now_ns: int, name: str, hardware_id: str, level: int, message: str,
                values: dict) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = to_time(now_ns)
    st = DiagnosticStatus(level=bytes([level]), name=name, message=message,
                          hardware_id=hardware_id)
    st.values = [KeyValue(key=k, value=(f"{v:.3f}" if isinstance(v, float) else str(v)))
                 for k, v in values.items()]
    arr.status = [st]
    return arr


LEVEL_OK, LEVEL_WARN, LEVEL_ERROR = 0, 1, 2
