"""Per-embodiment modality configuration and state/action normalisation of GR00T N1.7.

Follows Isaac-GR00T n1.7-release: ``processor_config.json``'s ``modality_configs`` (which
camera views, which state and action groups in which order, how many action steps),
``statistics.json`` (per group min/max/mean/std/q01/q99) and ``embodiment_id.json``
(``gr00t/model/gr00t_n1d7/processing_gr00t_n1d7.py``), normalised as
``gr00t/data/state_action/state_action_processor.py`` and ``gr00t/data/utils.py`` do:
min/max (or q01/q99 with ``use_percentiles``) to [-1, 1], clipped when ``clip_outliers``;
groups in ``mean_std_embedding_keys`` use (x - mean) / std. Relative actions and sin/cos
state encoding are refused (they need the previous state and are off in the releases'
defaults).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

# processing_gr00t_n1d7.EMBODIMENT_TAG_TO_PROJECTOR_INDEX: tags every release knows, merged
# under the checkpoint's own embodiment_id.json.
BUILTIN_EMBODIMENT_IDS = {
    "oxe_droid_relative_eef_relative_joint": 24, "xdof_relative_eef_relative_joint": 27,
    "xdof_relative_eef_relative_joint_subtask": 27, "real_g1_relative_eef_relative_joints": 25,
    "real_r1_pro_sharpa_relative_eef": 26, "real_r1_pro_sharpa_relative_eef_human": 26,
    "real_r1_pro_sharpa_relative_eef_maxinsights": 26,
    "real_r1_pro_sharpa_relative_eef_mecka": 26,
    "unitree_g1_full_body_with_waist_height_nav_cmd": 25, "simpler_env_google": 0,
    "simpler_env_widowx": 1, "libero_sim": 2, "new_embodiment": 10,
}
RELATIVE = "relative"


@dataclass(frozen=True)
class GroupStats:
    """One state or action group: its dims and the parameters that normalise it."""

    name: str
    low: np.ndarray  # min or q01
    high: np.ndarray  # max or q99
    mean: np.ndarray
    std: np.ndarray
    mean_std: bool

    @property
    def dims(self) -> int:
        return int(self.low.shape[0])

    def normalize(self, x: np.ndarray, clip: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.mean_std:
            out = np.where(self.std != 0, (x - self.mean) / np.where(self.std != 0, self.std, 1),
                           x)
        else:
            moving = ~np.isclose(self.high, self.low)
            span = np.where(moving, self.high - self.low, 1.0)
            out = np.where(moving, 2.0 * (x - self.low) / span - 1.0, 0.0)
        return np.clip(out, -1.0, 1.0) if clip and not self.mean_std else out

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.mean_std:
            return np.where(self.std != 0, y * self.std + self.mean, y)
        return (np.clip(y, -1.0, 1.0) + 1.0) / 2.0 * (self.high - self.low) + self.low


@dataclass(frozen=True)
class EmbodimentSpec:
    tag: str
    embodiment_id: int
    video_keys: tuple[str, ...]
    state: tuple[GroupStats, ...]
    action: tuple[GroupStats, ...]
    action_horizon: int  # steps the embodiment uses (len(action delta_indices))
    clip_outliers: bool

    @property
    def state_dims(self) -> int:
        return sum(g.dims for g in self.state)

    @property
    def action_dims(self) -> int:
        return sum(g.dims for g in self.action)

    @property
    def num_views(self) -> int:
        return len(self.video_keys)

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        """Flat raw state (state groups concatenated in modality order) -> normalised."""
        s = np.asarray(state, dtype=np.float64)
        if s.ndim != 1 or s.shape[0] != self.state_dims:
            raise ValueError(f"state must be a flat vector of {self.state_dims} values "
                             f"({', '.join(f'{g.name}:{g.dims}' for g in self.state)}), got "
                             f"shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"state contains NaN or inf: {s}")
        parts, start = [], 0
        for g in self.state:
            parts.append(g.normalize(s[start:start + g.dims], self.clip_outliers))
            start += g.dims
        return np.concatenate(parts)

    def unnormalize_actions(self, norm: np.ndarray) -> np.ndarray:
        """(steps, >= action_dims) model output -> (steps, action_dims) robot units."""
        parts, start = [], 0
        for g in self.action:
            parts.append(g.unnormalize(norm[:, start:start + g.dims]))
            start += g.dims
        return np.concatenate(parts, axis=-1)


def _group(name: str, raw: Mapping[str, Any], percentiles: bool, mean_std: bool,
           where: str) -> GroupStats:
    lo_key, hi_key = ("q01", "q99") if percentiles else ("min", "max")
    missing = [k for k in (lo_key, hi_key, "mean", "std") if k not in raw]
    if missing:
        raise ValueError(f"{where}.{name}: statistics lack {missing}")
    arrays = {k: np.asarray(raw[k], dtype=np.float64).reshape(-1)
              for k in (lo_key, hi_key, "mean", "std")}
    if len({a.shape for a in arrays.values()}) != 1:
        raise ValueError(f"{where}.{name}: statistics of different lengths")
    return GroupStats(name, arrays[lo_key], arrays[hi_key], arrays["mean"], arrays["std"],
                      mean_std)


def _keys(modality: Mapping[str, Any], name: str, where: str) -> list[str]:
    if name not in modality or not modality[name].get("modality_keys"):
        raise ValueError(f"{where}: no {name} modality_keys")
    return list(modality[name]["modality_keys"])


def embodiment_tags(processor_kwargs: Mapping[str, Any]) -> list[str]:
    return sorted(processor_kwargs.get("modality_configs", {}))


def load_embodiment(tag: Optional[str], processor_kwargs: Mapping[str, Any],
                    statistics: Mapping[str, Any], embodiment_ids: Mapping[str, int],
                    max_num_embodiments: int) -> EmbodimentSpec:
    """The spec of ``tag`` (None: the checkpoint's only embodiment)."""
    tags = embodiment_tags(processor_kwargs)
    if tag is None:
        if len(tags) != 1:
            raise ValueError(f"the checkpoint has embodiments {tags}: pass embodiment=")
        tag = tags[0]
    if tag not in tags:
        raise ValueError(f"unknown embodiment {tag!r}; the checkpoint has {tags}")
    where = f"embodiment {tag!r}"
    modality = processor_kwargs["modality_configs"][tag]
    if tag not in statistics:
        raise ValueError(f"{where}: statistics.json has no entry")
    ids = {**BUILTIN_EMBODIMENT_IDS, **embodiment_ids}
    if tag not in ids or not 0 <= int(ids[tag]) < max_num_embodiments:
        raise ValueError(f"{where}: no embodiment id in [0, {max_num_embodiments})")
    if processor_kwargs.get("apply_sincos_state_encoding"):
        raise ValueError(f"{where}: sin/cos state encoding is not supported")
    action_cfg = modality["action"]
    reps = [str(c.get("rep", "")).lower() for c in action_cfg.get("action_configs") or []]
    if processor_kwargs.get("use_relative_action") and RELATIVE in reps:
        raise ValueError(f"{where}: relative actions are not supported (they need the state "
                         "history to turn back into absolute targets)")
    percentiles = bool(processor_kwargs.get("use_percentiles", False))
    stats = statistics[tag]

    def groups(kind: str) -> tuple[GroupStats, ...]:
        mean_std = set(modality[kind].get("mean_std_embedding_keys") or [])
        return tuple(_group(k, stats[kind].get(k, {}), percentiles, k in mean_std,
                            f"{where}.{kind}") for k in _keys(modality, kind, where))

    return EmbodimentSpec(
        tag=tag, embodiment_id=int(ids[tag]),
        video_keys=tuple(_keys(modality, "video", where)),
        state=groups("state"), action=groups("action"),
        action_horizon=len(action_cfg.get("delta_indices") or []),
        clip_outliers=bool(processor_kwargs.get("clip_outliers", True)))
