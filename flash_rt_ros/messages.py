"""Build the node's output messages (ActionChunk, JointTrajectory, DiagnosticArray)."""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from flash_rt_ros.chunks import NS, ChunkRecord, MessageTypes, stamp_ns, to_message
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


def joint_trajectory(actions: np.ndarray, joint_names, control_period_ns: int,
                     frame_id: str) -> JointTrajectory:
    """Actions as joint position targets for ros2_control's joint_trajectory_controller.

    header.stamp stays zero ("start on receipt"); point t is due (t + 1) control periods
    later, so the first target is one period ahead rather than an instant jump.
    """
    traj = JointTrajectory()
    traj.header.frame_id = frame_id
    traj.joint_names = list(joint_names)
    pts = []
    for t in range(actions.shape[0]):
        pt = JointTrajectoryPoint()
        pt.positions = actions[t].astype(np.float64).tolist()
        pt.time_from_start = to_duration((t + 1) * control_period_ns)
        pts.append(pt)
    traj.points = pts
    return traj


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
