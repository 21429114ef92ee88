"""The node's parameters, declared once, and their validation (no rclpy).

Every key, its default (which also fixes its ROS parameter type) and its meaning live
here and nowhere else: the node declares exactly these, the tests check that every
``config/*.yaml`` uses only these keys, and docs/ros.md is checked against this table.
The rosbag tools read the same params files through :func:`load_params_file`, so a
replay assembles observations with exactly the configuration the node would use.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

NODE_NAME = "flash_rt_policy"


@dataclass(frozen=True)
class NodeParams:
    """Values of the node's ROS parameters (field defaults = declared defaults)."""

    # What to run.
    model: str = "pi05"  # "pi05" | "pi0" | "groot"
    framework: str = "torch"  # "torch": model.safetensors; "jax": openpi params/ + assets/
    hardware: str = "auto"  # "auto" | "cpu" | "hopper" | "thor" | "rtx_sm120"
    checkpoint_dir: str = ""  # holds model.safetensors, norm_stats.json, tokenizer.model
    embodiment: str = ""  # groot: embodiment tag; "" = the checkpoint's only embodiment
    asset_id: str = ""  # framework jax: assets/<asset_id>/norm_stats.json; "" = the only one
    num_views: int = 0  # views fed per predict; 0 = one per camera topic
    horizon: int = 0  # actions per chunk; 0 = the checkpoint preset's default
    num_steps: int = 0  # flow-matching steps; 0 = preset default
    seed: int = 0  # base of the chunk noise seeds (recorded in ActionChunk.seed)
    seed_mode: str = "sequence"  # "sequence": chunk k uses seed + k; "stamp": a hash of
    # (seed, observation stamp), so replays of a recording reproduce every chunk's noise
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

STATE_SOURCES = ("position", "velocity", "effort", "none")
STAMP_SOURCES = ("header", "receipt")
SEED_MODES = ("sequence", "stamp")


def transports(p: NodeParams) -> list[str]:
    """Per-camera transport: explicit, or "compressed" for topics ending in /compressed."""
    explicit = [t for t in p.camera_transports if t]
    if explicit and len(explicit) != len(p.camera_topics):
        raise ValueError(f"camera_transports has {len(explicit)} entries for "
                         f"{len(p.camera_topics)} camera_topics")
    out = []
    for i, topic in enumerate(p.camera_topics):
        t = explicit[i] if explicit else ("compressed" if topic.endswith("/compressed") else "raw")
        if t not in ("raw", "compressed"):
            raise ValueError(f"camera_transports[{i}] must be raw or compressed, got {t!r}")
        out.append(t)
    return out


def validate(p: NodeParams) -> None:
    """Refuse a configuration that could only fail later, with a message that says why."""
    if not p.camera_topics or not all(p.camera_topics):
        raise ValueError("camera_topics must name at least one topic")
    if not p.joint_names or not all(p.joint_names):
        raise ValueError("joint_names is required (state order and action order)")
    if len(set(p.joint_names)) != len(p.joint_names):
        raise ValueError(f"joint_names has duplicates: {list(p.joint_names)}")
    if p.state_source not in STATE_SOURCES:
        raise ValueError(f"state_source must be one of {STATE_SOURCES}")
    if p.state_source != "none" and (not p.joint_state_topics or not all(p.joint_state_topics)):
        raise ValueError("joint_state_topics must name at least one topic")
    if len(set(p.joint_state_topics)) != len(p.joint_state_topics):
        raise ValueError(f"joint_state_topics has duplicates: {list(p.joint_state_topics)}")
    if p.stamp_source not in STAMP_SOURCES:
        raise ValueError(f"stamp_source must be one of {STAMP_SOURCES}")
    if p.seed_mode not in SEED_MODES:
        raise ValueError(f"seed_mode must be one of {SEED_MODES}")
    if p.trigger not in ("timer", "camera"):
        raise ValueError("trigger must be 'timer' or 'camera'")
    if p.qos not in ("sensor_data", "reliable"):
        raise ValueError("qos must be 'sensor_data' or 'reliable'")
    if p.rate_hz <= 0 or p.max_observation_age_s <= 0 or p.control_period_s <= 0:
        raise ValueError("rate_hz, max_observation_age_s and control_period_s must be > 0")
    if p.num_views and p.num_views < len(p.camera_topics):
        raise ValueError(f"num_views {p.num_views} < {len(p.camera_topics)} camera topics")
    transports(p)


def refuse_renamed(names) -> None:
    """A renamed parameter is refused: ROS would otherwise ignore it silently and the
    node would listen on the default."""
    old = sorted(n for n in RENAMED if n in names)
    if old:
        raise ValueError("renamed parameter(s): " + ", ".join(
            f"{n} is now {RENAMED[n]}" for n in old))


# Keys of a params file that apply to this node, in the order ROS applies them (the
# wildcard first, so the node's own section wins).
_SECTIONS = ("/**", "**", NODE_NAME, "/" + NODE_NAME)
# Parameters every ROS node has; a params file may set them, they are not ours.
_ROS_BUILTIN = {"use_sim_time"}


def params_from_dict(values: dict) -> NodeParams:
    """NodeParams from ``{name: value}`` (a params file's ``ros__parameters``), typed like
    the declared defaults; unknown names and renamed parameters are refused."""
    refuse_renamed(values)
    unknown = sorted(set(values) - set(PARAM_NAMES) - _ROS_BUILTIN)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the node declares {list(PARAM_NAMES)}")
    typed = {}
    for name, value in values.items():
        if name in _ROS_BUILTIN:
            continue
        default = DEFAULTS[name]
        if isinstance(default, tuple):
            value = (value,) if isinstance(value, str) else tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tuple if isinstance(default, tuple) else type(default)):
            raise ValueError(f"parameter {name}={value!r} should be a {type(default).__name__}")
        typed[name] = value
    return NodeParams(**typed)


def load_params_file(path, overrides: dict | None = None) -> NodeParams:
    """The node's parameters from a ROS params file (plus ``overrides``), validated."""
    import yaml

    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    values: dict = {}
    for section in _SECTIONS:
        values.update((doc.get(section) or {}).get("ros__parameters") or {})
    if not values:
        raise ValueError(f"{path}: no ros__parameters for {NODE_NAME} (or /**)")
    values.update(overrides or {})
    p = params_from_dict(values)
    validate(p)
    return p
