"""Build the node's output messages (ActionChunk, JointTrajectory, DiagnosticArray)."""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from flash_rt_ros_msgs.msg import ActionChunk

NS = 1_000_000_000


def to_time(ns: int) -> Time:
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


def to_duration(ns: int) -> Duration:
    return Duration(sec=int(ns // NS), nanosec=int(ns % NS))


def stamp_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (or anything with sec/nanosec) to integer ns."""
    return int(stamp.sec) * NS + int(stamp.nanosec)


def floats(a: np.ndarray) -> array.array:
    """float32 array to the array.array a ROS float32[] field stores (one memcpy)."""
    out = array.array("f")
    out.frombytes(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return out


def action_chunk(*, obs, actions: np.ndarray, sequence: int, seed: int, camera_topics,
                 joint_names, control_period_ns: int, frame_id: str, prompt: str,
                 model: str, hardware: str, checkpoint_id: str,
                 inference_latency_ms: float) -> ActionChunk:
    """Everything needed to reproduce and audit one chunk (node_latency_ms set at publish)."""
    m = ActionChunk()
    m.header.stamp = to_time(obs.stamp_ns)
    m.header.frame_id = frame_id
    m.sequence = sequence
    m.seed = seed
    m.camera_topics = list(camera_topics)
    m.image_stamps = [to_time(s) for s in obs.image_stamps_ns]
    m.state_stamp = to_time(obs.state_stamp_ns)
    m.state = floats(obs.state)
    m.horizon, m.action_dim = int(actions.shape[0]), int(actions.shape[1])
    m.control_period = to_duration(control_period_ns)
    m.joint_names = list(joint_names)
    m.actions = floats(actions)
    m.inference_latency_ms = float(inference_latency_ms)
    m.prompt, m.model, m.hardware, m.checkpoint_id = prompt, model, hardware, checkpoint_id
    return m


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
