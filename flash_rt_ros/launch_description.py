"""Shared body of the launch/*.launch.py files (needs a ROS 2 install with launch_ros).

Each launch file names its params file; launch arguments override only what they set,
so an empty argument keeps the value from the YAML.

The node fails at start-up (exit 1, one line) when the params ask for a hardware the
engine has no frontend for; the line lists the registered (model, framework, hardware)
combinations.
"""
from __future__ import annotations

import os

import yaml

ARGUMENTS = {
    "checkpoint": "checkpoint directory (model.safetensors, norm_stats.json, tokenizer.model; "
                  "framework jax: openpi's params/ and assets/; GR00T: the released layout)",
    "framework": "torch (model.safetensors) or jax (openpi checkpoint: params/ + assets/)",
    "asset_id": "framework jax: assets/<asset_id>/norm_stats.json (default: the only one)",
    "embodiment": "GR00T: the embodiment tag (default: the checkpoint's only embodiment)",
    "namespace": "ROS namespace of the node",
    "camera_topics": "YAML list of camera topics, e.g. \"['/front/image_raw', '/wrist/image_raw']\"",
    "joint_state_topics": "YAML list of sensor_msgs/JointState topics (or one topic), e.g. "
                          "\"['/joint_states', '/gripper/joint_states']\"",
    "prompt": "task instruction",
    "params_file": "a params YAML replacing the packaged one",
}
# launch argument -> node parameter (the rest map to themselves)
_PARAM_OF = {"checkpoint": "checkpoint_dir"}
_LISTS = ("camera_topics", "joint_state_topics")  # YAML lists; a bare topic becomes [topic]


def overrides(cfg: dict) -> dict:
    """Node parameters from the non-empty launch arguments."""
    out = {}
    for arg in ("checkpoint", "framework", "asset_id", "embodiment", "camera_topics",
                "joint_state_topics", "prompt"):
        if cfg.get(arg):
            value = cfg[arg]
            if arg in _LISTS:
                value = yaml.safe_load(value)
                value = [value] if isinstance(value, str) else list(value)
            out[_PARAM_OF.get(arg, arg)] = value
    return out


def config_path(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory("flash_rt_ros"), "config", name)


def policy_launch(params_file: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def node(context):
        cfg = {k: LaunchConfiguration(k).perform(context) for k in ARGUMENTS}
        return [Node(package="flash_rt_ros", executable="flash_rt_policy_node",
                     name="flash_rt_policy", namespace=cfg["namespace"], output="screen",
                     parameters=[cfg["params_file"] or config_path(params_file),
                                 overrides(cfg)])]

    args = [DeclareLaunchArgument(k, default_value="", description=d)
            for k, d in ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=node)])
