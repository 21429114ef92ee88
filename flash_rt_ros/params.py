"""The node's parameters, declared once.

Every key, its default (which also fixes its ROS parameter type) and its meaning live
here and nowhere else: the node declares exactly these, the tests check that every
``config/*.yaml`` uses only these keys, and docs/ros.md is checked against this table.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

NODE_NAME = "flash_rt_policy"


@dataclass(frozen=True)
class NodeParams:
    """Values of the node's ROS parameters (field defaults = declared defaults)."""

    # What to run.
    model: str = "pi05"  # "pi05" | "pi0"
    framework: str = "torch"
    hardware: str = "auto"  # "auto" | "cpu" | "hopper" | "thor" | "rtx_sm120"
    checkpoint_dir: str = ""  # holds model.safetensors, norm_stats.json, tokenizer.model
    num_views: int = 0  # views fed per predict; 0 = one per camera topic
    horizon: int = 0  # actions per chunk; 0 = the checkpoint preset's default
    num_steps: int = 0  # flow-matching steps; 0 = preset default
    seed: int = 0  # chunk k is sampled with seed + k (recorded in ActionChunk.seed)
    prompt: str = ""  # task instruction; also settable at runtime (parameter or prompt_topic)
    # Inputs.
    camera_topics: tuple = ("/camera/image_raw",)
    camera_transports: tuple = ("",)  # per camera "raw" | "compressed"; "" = by topic suffix
    joint_state_topics: tuple = ("/joint_states",)  # each may carry any subset of joint_names
    joint_names: tuple = ("",)  # order of the state vector and of the actions (required)
    state_source: str = "position"  # JointState field fed as state: position|velocity|effort|none
    qos: str = "sensor_data"  # input QoS: "sensor_data" (best effort, depth 5) | "reliable"
    stamp_source: str = "header"  # input time: "header" stamps | "receipt" (node clock)
    # Timing and safety.
    rate_hz: float = 10.0  # inference rate (timer trigger) or upper bound (camera trigger)
    trigger: str = "timer"  # "timer": tick at rate_hz; "camera": on each last-camera frame
    max_observation_age_s: float = 0.5  # older camera frames / joint states block publishing
    control_period_s: float = 0.02  # time between consecutive actions of a chunk
    # Outputs.
    frame_id: str = "base_link"
    action_chunk_topic: str = "~/action_chunk"
    trajectory_topic: str = "~/joint_trajectory"  # "" disables the JointTrajectory output
    prompt_topic: str = "~/prompt"  # std_msgs/String; "" disables
    diagnostics_topic: str = "/diagnostics"
    diagnostics_period_s: float = 1.0


PARAM_NAMES = tuple(f.name for f in fields(NodeParams))
DEFAULTS = {f.name: f.default for f in fields(NodeParams)}
# String arrays need a non-empty default so rclpy infers STRING_ARRAY.
STRING_ARRAYS = {"camera_topics", "camera_transports", "joint_state_topics", "joint_names"}
# Parameters that were renamed: setting the old name is refused at start-up, because
# rclpy would otherwise ignore it silently and the node would listen on the default.
RENAMED = {"joint_state_topic": "joint_state_topics"}
