"""The node's parameters, declared once, and their validation (no rclpy).

Every key, its default (which also fixes its type), its bounds and its meaning live here
and nowhere else: the node declares exactly these and refuses any other name, the tests
check that every ``config/*.yaml`` uses only these keys, and docs/ros.md is checked against
this table and the bounds.
The rosbag tools read the same params files through :func:`load_params_file`, so a
replay assembles observations with exactly the configuration the node would use.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from flash_rt_ros.malformed import brief

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
    max_observation_age_s: float = 0.5  # older inputs block the tick and drop the chunk
    future_stamp_tolerance_s: float = 0.05  # inputs stamped further ahead are refused
    control_period_s: float = 0.02  # time between consecutive actions of a chunk
    # FP8 fast paths: real observations their activation scales are calibrated on
    calibration_frames: int = 5
    # Limits on what a message may make the node do (memory, time, log size).
    max_image_pixels: int = 3840 * 2160  # per frame, checked from the header before decoding
    jpeg_decoder: str = "cpu"  # "cpu" (OpenCV) | "gpu" (nvImageCodec) | "auto" (gpu if it can run)
    max_abs_joint_value: float = 1.0e6  # |state value| above this blocks publishing
    max_prompt_chars: int = 2000  # a longer prompt (parameter or topic) is refused
    # Outputs.
    frame_id: str = "base_link"
    action_chunk_topic: str = "~/action_chunk"
    trajectory_topic: str = "~/joint_trajectory"  # "" disables the JointTrajectory output
    trajectory_stamp: str = "observation"  # header.stamp: "observation" time | "receipt" (0)
    blend_steps: int = 0  # cross-fade from the previous trajectory over this many points
    prompt_topic: str = "~/prompt"  # std_msgs/String; "" disables
    diagnostics_topic: str = "/diagnostics"
    diagnostics_period_s: float = 1.0


PARAM_NAMES = tuple(f.name for f in fields(NodeParams))
DEFAULTS = {f.name: f.default for f in fields(NodeParams)}
# Parameters that were renamed: setting the old name is refused at start-up, because
# rclpy would otherwise ignore it silently and the node would listen on the default.
RENAMED = {"joint_state_topic": "joint_state_topics"}

STATE_SOURCES = ("position", "velocity", "effort", "none")
STAMP_SOURCES = ("header", "receipt")
SEED_MODES = ("sequence", "stamp")
TRIGGERS = ("timer", "camera")
QOS_PROFILES = ("sensor_data", "reliable")
TRAJECTORY_STAMPS = ("observation", "receipt")
JPEG_DECODERS = ("cpu", "gpu", "auto")  # flash_rt_ros.jpeg
MAX_SEED = 2**63 - 1  # the largest int64 ROS parameter; seeds wrap modulo MAX_SEED + 1


@dataclass(frozen=True)
class Bound:
    """The physically sensible range of a numeric parameter (both ends included);
    ``zero_means`` names what 0 stands for when 0 is allowed outside the range."""

    lo: float
    hi: float
    unit: str = ""
    zero_means: str = ""


# Every numeric parameter has one. Beyond these a value is a typo or a unit mix-up (ms for
# s, a 1e5 horizon that exhausts memory, a rate that spins the CPU), never a real setup.
BOUNDS = {
    "num_views": Bound(1, 16, zero_means="one per camera topic"),
    "horizon": Bound(1, 1000, "actions", zero_means="the preset default"),
    "num_steps": Bound(1, 100, zero_means="the preset default"),
    "seed": Bound(0, MAX_SEED),
    "rate_hz": Bound(0.01, 1000.0, "Hz"),
    "max_observation_age_s": Bound(0.001, 60.0, "s"),
    "future_stamp_tolerance_s": Bound(0.0, 1.0, "s"),
    "control_period_s": Bound(0.0001, 10.0, "s"),
    "calibration_frames": Bound(1, 1000, "observations"),
    "blend_steps": Bound(1, 1000, "points", zero_means="no blending"),
    "max_image_pixels": Bound(1, 7680 * 4320, "pixels"),
    "max_abs_joint_value": Bound(1e-3, 1e9),
    "max_prompt_chars": Bound(1, 100_000, "characters"),
    "diagnostics_period_s": Bound(0.05, 3600.0, "s"),
}
# Parameters every ROS node has; a params file may set them, they are not ours.
ROS_BUILTIN = {"use_sim_time", "start_type_description_service"}


class InvalidParams(ValueError):
    """One or more parameters refused; ``errors`` holds one (name, why) per parameter."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("\n".join(f"{name}: {why}" for name, why in self.errors))


def transports(p: NodeParams) -> list[str]:
    """Per-camera transport: explicit, or "compressed" for topics ending in /compressed."""
    explicit = [t for t in p.camera_transports if t]
    if explicit and len(explicit) != len(p.camera_topics):
        raise InvalidParams([("camera_transports", f"{len(explicit)} entries for "
                                                   f"{len(p.camera_topics)} camera_topics")])
    out = []
    for i, topic in enumerate(p.camera_topics):
        t = explicit[i] if explicit else ("compressed" if topic.endswith("/compressed") else "raw")
        if t not in ("raw", "compressed"):
            raise InvalidParams([("camera_transports", f"entry {i} must be raw or compressed, "
                                                       f"got {brief(t)!r}")])
        out.append(t)
    return out


def _bound_error(name: str, value) -> str | None:
    b = BOUNDS[name]
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if b.zero_means and value == 0:
        return None
    if b.lo <= value <= b.hi:
        return None
    unit = f" {b.unit}" if b.unit else ""
    zero = f" (or 0 = {b.zero_means})" if b.zero_means else ""
    return f"must be in [{_num(b.lo)}, {_num(b.hi)}]{unit}{zero}, got {_num(value)}"


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _choice_error(value: str, choices) -> str | None:
    return None if value in choices else f"must be one of {choices}, got {brief(value)!r}"


def validation_errors(p: NodeParams) -> list[tuple[str, str]]:
    """Every reason to refuse ``p``, one (name, why) per parameter."""
    errors = [(n, why) for n in BOUNDS if (why := _bound_error(n, getattr(p, n)))]
    for name, choices in (("state_source", STATE_SOURCES), ("stamp_source", STAMP_SOURCES),
                          ("seed_mode", SEED_MODES), ("trigger", TRIGGERS),
                          ("qos", QOS_PROFILES), ("trajectory_stamp", TRAJECTORY_STAMPS),
                          ("jpeg_decoder", JPEG_DECODERS)):
        if why := _choice_error(getattr(p, name), choices):
            errors.append((name, why))
    if not p.camera_topics or not all(p.camera_topics):
        errors.append(("camera_topics", "must name at least one topic"))
    if not p.joint_names or not all(p.joint_names):
        errors.append(("joint_names", "is required (state order and action order)"))
    elif len(set(p.joint_names)) != len(p.joint_names):
        errors.append(("joint_names", f"has duplicates: {list(p.joint_names)}"))
    if p.state_source != "none" and (not p.joint_state_topics or not all(p.joint_state_topics)):
        errors.append(("joint_state_topics", "must name at least one topic"))
    elif len(set(p.joint_state_topics)) != len(p.joint_state_topics):
        errors.append(("joint_state_topics", f"has duplicates: {list(p.joint_state_topics)}"))
    if p.num_views > 0 and len(p.camera_topics) > p.num_views:
        errors.append(("num_views", f"{p.num_views} < {len(p.camera_topics)} camera topics"))
    if len(p.prompt) > p.max_prompt_chars:
        errors.append(("prompt", f"{len(p.prompt)} characters, more than max_prompt_chars "
                                 f"({p.max_prompt_chars})"))
    try:
        transports(p)
    except InvalidParams as exc:
        errors += exc.errors
    first = {}  # one line per parameter: its first problem
    for name, why in errors:
        first.setdefault(name, why)
    return list(first.items())


def validate(p: NodeParams) -> None:
    """Refuse a configuration that could only fail later: InvalidParams with one line per
    refused parameter, each saying why."""
    errors = validation_errors(p)
    if errors:
        raise InvalidParams(errors)


def unknown_errors(names, known) -> list[tuple[str, str]]:
    """One error per name that is not a parameter of this node (renamed ones say so)."""
    errors = []
    for name in sorted(set(names) - set(known)):
        if name in RENAMED:
            errors.append((name, f"renamed: {name} is now {RENAMED[name]}"))
            continue
        close = difflib.get_close_matches(name, PARAM_NAMES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        errors.append((name, f"unknown parameter; {hint}the node's parameters are "
                             f"{', '.join(PARAM_NAMES)}"))
    return errors


_KIND = {str: "a string", int: "an integer", float: "a number"}


def _typed(name: str, value):
    """``value`` as the type of ``name``'s default, or (None, why)."""
    default = DEFAULTS[name]
    if isinstance(default, tuple):
        if value is None:  # an empty list: ROS cannot type it, so it arrives unset
            return (), None
        if isinstance(value, str):
            return (value,), None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value), None
        return None, f"expected a list of strings, got {brief(repr(value))}"
    if isinstance(value, bool) or value is None:
        return None, f"expected {_KIND[type(default)]}, got {value!r}"
    if isinstance(default, float) and isinstance(value, (int, float)):
        return float(value), None
    if isinstance(value, type(default)):
        return value, None
    return None, (f"expected {_KIND[type(default)]}, got {brief(repr(value))} "
                  f"({type(value).__name__})")



def params_from_dict(values: dict) -> NodeParams:
    """Validated NodeParams from ``{name: value}`` (a params file's ``ros__parameters`` or
    the node's parameter values), typed like the declared defaults (an integer is accepted
    for a float). Unknown and renamed names, wrong types and out-of-range values are all
    refused together: InvalidParams with one line per parameter."""
    errors = unknown_errors(values, set(PARAM_NAMES) | ROS_BUILTIN)
    typed = {}
    for name, value in values.items():
        if name in PARAM_NAMES:
            typed[name], why = _typed(name, value)
            if why:
                errors.append((name, why))
                del typed[name]  # its default stands in, so the others are still checked
    p = NodeParams(**typed)
    errors += [(n, why) for n, why in validation_errors(p) if n not in dict(errors)]
    if errors:
        raise InvalidParams(errors)
    return p


# Keys of a params file that apply to this node, in the order ROS applies them (the
# wildcard first, so the node's own section wins).
_SECTIONS = ("/**", "**", NODE_NAME, "/" + NODE_NAME)


def read_params_file(path) -> dict:
    """The ``{name: value}`` a ROS params file sets for this node; InvalidParams naming the
    file and the cause (missing, not a regular file, YAML error with its line, wrong shape).

    The node checks its ``--params-file`` arguments with this before rcl parses them: rcl's
    own error is a traceback-shaped ``RCLError`` that points into its C sources.
    """
    import yaml

    from flash_rt.core.files import regular_file

    where = "--params-file"
    try:
        text = regular_file(path, "file").read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise InvalidParams([(where, f"{path}: not valid YAML: {line}"
                                     f"{getattr(exc, 'problem', None) or exc}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParams([(where, f"{path}: {exc}" if isinstance(exc, UnicodeDecodeError)
                              else str(exc))]) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidParams([(where, f"{path}: expected a mapping of node names, got a "
                                     f"{type(doc).__name__}")])
    values: dict = {}
    for section in _SECTIONS:
        body = doc.get(section)
        if body is None:
            continue
        params = body.get("ros__parameters") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            raise InvalidParams([(where, f"{path}: section {section!r} needs a "
                                         "'ros__parameters' mapping")])
        values.update(params)
    return values


def with_resolved_topics(p: NodeParams, resolve) -> NodeParams:
    """``p`` with its input topics as ``resolve`` (the node's ``resolve_topic_name``: its
    namespace and remappings applied) names them: what the node subscribes to and what its
    chunks record. The params files use relative names (``cam0/image_raw``), so a robot's
    namespace moves all of its topics at once."""
    return replace(p, camera_topics=tuple(resolve(t) for t in p.camera_topics),
                   joint_state_topics=tuple(resolve(t) for t in p.joint_state_topics))


def in_root_namespace(topic: str) -> str:
    """How a node in the root namespace names ``topic`` (a relative name gets a leading
    ``/``); the rosbag tools read recordings with this."""
    return topic if topic.startswith("/") else "/" + topic


def load_params_file(path, overrides: dict | None = None) -> NodeParams:
    """The node's parameters from a ROS params file (plus ``overrides``), validated, with
    the input topics named as a node in the root namespace would resolve them."""
    values = read_params_file(path)
    if not values:
        raise InvalidParams([("--params-file", f"{path}: no ros__parameters for {NODE_NAME} "
                                               "(or /**)")])
    values.update(overrides or {})
    try:
        return with_resolved_topics(params_from_dict(values), in_root_namespace)
    except InvalidParams as exc:
        raise InvalidParams([(n, f"{why} (in {path})") for n, why in exc.errors]) from None
