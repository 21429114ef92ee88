"""Shared body of the launch/*.launch.py files (needs a ROS 2 install with launch_ros).

Each launch file names its params file; launch arguments override only what they set,
so an empty argument keeps the value from the YAML.

The node fails at start-up (exit 1, one line) when the params ask for a hardware the
engine has no frontend for; the line lists the registered (model, framework, hardware)
combinations. The launch ends with the node (``on_exit``, launch_ros' ExecuteProcess
argument): a clean stop shuts the launch down, a failure also makes ``ros2 launch`` exit
with status 1.

``managed:=true`` starts the lifecycle node (``managed_node.py``) instead, configured and
activated by itself at start-up (``--autostart``) unless ``autostart:=false`` (then a
lifecycle manager or ``ros2 lifecycle set`` drives it).
"""
from __future__ import annotations

import os

import yaml

AUTOSTART = "--autostart"  # managed node: configure and activate itself (managed_node.py)

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
    "managed": "true: a managed (lifecycle) node (configure/activate/deactivate/cleanup)",
    "autostart": "managed:=true only: configure and activate it at launch (false: leave "
                 "it unconfigured for a lifecycle manager)",
}
DEFAULTS = {"managed": "false", "autostart": "true"}
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


def is_true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def node_exited(event, context):
    """``on_exit`` of the node: end the launch with it. A node that stops with status 0
    (a signal, the normal stop) shuts the launch down; any other status (a ``fatal:``
    start-up error, a crash) is raised, which launch reports as an error, shuts down, and
    turns into ``ros2 launch``'s exit status 1 (launch.LaunchService.run returns non-zero
    when an action or event handler raised), so a script can tell."""
    from launch.actions import Shutdown

    name = event.action.process_details["name"]
    if event.returncode != 0:
        raise RuntimeError(f"{name} exited with status {event.returncode} (its log above "
                           "says why)")
    return [Shutdown(reason=f"{name} stopped")]


def policy_launch(params_file: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def node(context):
        cfg = {k: LaunchConfiguration(k).perform(context) for k in ARGUMENTS}
        managed = is_true(cfg["managed"])
        executable = "flash_rt_policy_managed_node" if managed else "flash_rt_policy_node"
        return [Node(package="flash_rt_ros", executable=executable, name="flash_rt_policy",
                     namespace=cfg["namespace"], output="screen", on_exit=node_exited,
                     arguments=[AUTOSTART] if managed and is_true(cfg["autostart"]) else [],
                     parameters=[cfg["params_file"] or config_path(params_file),
                                 overrides(cfg)])]

    args = [DeclareLaunchArgument(k, default_value=DEFAULTS.get(k, ""), description=d)
            for k, d in ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=node)])
