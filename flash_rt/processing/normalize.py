"""State/action normalisation with openpi's ``norm_stats.json`` statistics.

Pi0.5 uses quantile normalisation (q01/q99 -> [-1, 1], no clipping), Pi0 mean/std. The
model works on vectors zero-padded to ``config.action_dim``; the robot sees only its own dims.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flash_rt.core.files import regular_file

if TYPE_CHECKING:  # only for annotations; keeps this module light
    from flash_rt.configs import ModelConfig

log = logging.getLogger(__name__)

EPS = 1e-6  # openpi's denominator guard, in both methods
QUANTILE = "quantile"
MEAN_STD = "mean_std"
METHODS = (QUANTILE, MEAN_STD)
_REQUIRED = ("mean", "std")
_OPTIONAL = ("q01", "q99")  # openpi leaves them out for mean/std-only stats


@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension statistics of one feature (state or actions), float64 1-D arrays."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None
    where: str = field(default="", compare=False)  # file and key, for messages

    def __len__(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> "FeatureStats":
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected an object with {_REQUIRED + _OPTIONAL}")
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}")
        arrays = {}
        for key in _REQUIRED + _OPTIONAL:
            if raw.get(key) is None:
                continue
            try:
                a = np.asarray(raw[key], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}.{key}: expected a list of numbers ({exc})") from None
            if a.ndim != 1 or a.size == 0:
                raise ValueError(f"{where}.{key}: expected a non-empty list, got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{where}.{key}: contains NaN or inf")
            arrays[key] = a
        lengths = {k: a.shape[0] for k, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{where}: length mismatch between statistics {lengths}")
        if ("q01" in arrays) != ("q99" in arrays):
            raise ValueError(f"{where}: q01 and q99 must come together")
        if (arrays["std"] < 0).any():
            raise ValueError(f"{where}.std: negative at dims "
                             f"{np.flatnonzero(arrays['std'] < 0).tolist()}")
        if "q01" in arrays and (arrays["q99"] < arrays["q01"]).any():
            raise ValueError(f"{where}: q99 < q01 at dims "
                             f"{np.flatnonzero(arrays['q99'] < arrays['q01']).tolist()}")
        return cls(**arrays, where=where)

    def zero_range_dims(self, method: str) -> list[int]:
        """Dims whose normalising range is zero for ``method`` (q99 == q01, or std == 0)."""
        width = self.q99 - self.q01 if method == QUANTILE else self.std
        return np.flatnonzero(width == 0).tolist()


@dataclass(frozen=True)
class NormStats:
    """State and action statistics as stored in openpi's ``norm_stats.json``."""

    state: FeatureStats
    actions: FeatureStats

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        """Read ``{"norm_stats": {"state": {...}, "actions": {...}}}``."""
        path = regular_file(path, "norm stats file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict, where: str = "norm_stats") -> "NormStats":
        body = raw.get("norm_stats") if isinstance(raw, dict) else None
        if not isinstance(body, dict):
            raise ValueError(f"{where}: missing top-level 'norm_stats' object")
        for key in ("state", "actions"):
            if key not in body:
                raise ValueError(f"{where}: missing 'norm_stats.{key}'")
        return cls(state=FeatureStats.from_dict(body["state"], f"{where}: norm_stats.state"),
                   actions=FeatureStats.from_dict(body["actions"], f"{where}: norm_stats.actions"))


def _check_method(stats: FeatureStats, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown normalization {method!r}; expected one of {METHODS}")
    if method == QUANTILE and stats.q01 is None:
        raise ValueError("quantile normalization needs q01/q99 in norm_stats.json")


def normalize(x: np.ndarray, stats: FeatureStats, method: str) -> np.ndarray:
    """Normalise the last axis; ``x`` may be shorter than the stats (they are sliced)."""
    _check_method(stats, method)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    if n > len(stats):
        raise ValueError(f"input has {n} dims but the stats only {len(stats)}")
    if method == QUANTILE:
        q01, q99 = stats.q01[:n], stats.q99[:n]
        return (x - q01) / (q99 - q01 + EPS) * 2.0 - 1.0
    return (x - stats.mean[:n]) / (stats.std[:n] + EPS)


def unnormalize(y: np.ndarray, stats: FeatureStats, method: str) -> np.ndarray:
    """Inverse of :func:`normalize`; dims beyond the stats' length pass through unchanged."""
    _check_method(stats, method)
    y = np.array(y, dtype=np.float64)  # copy: the pass-through dims are returned as is
    n = min(y.shape[-1], len(stats))
    head = y[..., :n]
    if method == QUANTILE:
        q01, q99 = stats.q01[:n], stats.q99[:n]
        y[..., :n] = (head + 1.0) / 2.0 * (q99 - q01 + EPS) + q01
    else:
        y[..., :n] = head * (stats.std[:n] + EPS) + stats.mean[:n]
    return y


def pad_to(x: np.ndarray, dim: int) -> np.ndarray:
    """Zero-pad the last axis to ``dim`` (the model's ``config.action_dim``); never truncate."""
    x = np.asarray(x)
    n = x.shape[-1]
    if n > dim:
        raise ValueError(f"last axis has {n} dims, more than the model's {dim}")
    widths = [(0, 0)] * (x.ndim - 1) + [(0, dim - n)]
    return np.pad(x, widths)


class Normalizer:
    """Robot state in, robot actions out, for one model config and one set of stats."""

    def __init__(self, stats: NormStats, config: "ModelConfig") -> None:
        self.stats = stats
        self.method = config.normalization
        self.action_dim = config.action_dim
        for name, feat in (("state", stats.state), ("actions", stats.actions)):
            _check_method(feat, self.method)
            if len(feat) > self.action_dim:
                raise ValueError(f"{name} stats have {len(feat)} dims, more than the model's "
                                 f"action_dim {self.action_dim}")
            if dims := feat.zero_range_dims(self.method):
                # Accepted (a dataset may hold a joint that never moved), never silently:
                # the EPS guard makes any deviation there 1e6x larger once normalised.
                log.warning("%s: %s dims %s have a zero range (%s); a %s that differs there "
                            "is amplified %.0ex once normalised", feat.where or name, name,
                            dims, "q01 == q99" if self.method == QUANTILE else "std == 0",
                            name, 1 / EPS)

    @property
    def num_state_dims(self) -> int:
        return len(self.stats.state)

    @property
    def num_action_dims(self) -> int:
        return len(self.stats.actions)

    def normalize_state(self, raw_state: np.ndarray) -> np.ndarray:
        """Raw robot state (num_state_dims,) -> normalised, zero-padded float32 (action_dim,)."""
        s = np.asarray(raw_state, dtype=np.float64)
        if s.ndim != 1:
            raise ValueError(f"state must be 1-D, got shape {s.shape}")
        if s.shape[0] > self.action_dim:
            raise ValueError(f"state has {s.shape[0]} dims, more than action_dim {self.action_dim}")
        if s.shape[0] != self.num_state_dims:
            raise ValueError(f"state has {s.shape[0]} dims but the stats describe "
                             f"{self.num_state_dims}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"state contains NaN or inf: {s}")
        return pad_to(normalize(s, self.stats.state, self.method), self.action_dim).astype(np.float32)

    def action_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset), float64 (action_dim,): un-normalising is ``x * scale + offset``
        per dim (both methods are affine; dims without stats pass through). GPU frontends
        apply it inside their graph; :meth:`unnormalize_actions` is the reference."""
        eye = np.stack([np.zeros(self.action_dim), np.ones(self.action_dim)])
        offset, one = unnormalize(eye, self.stats.actions, self.method)
        return one - offset, offset

    def unnormalize_actions(self, norm_actions: np.ndarray, action_dims: int) -> np.ndarray:
        """Model output (H, action_dim) -> float32 (H, action_dims) in robot units.

        Non-finite model output raises rather than reaching the robot.
        """
        a = np.asarray(norm_actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.action_dim:
            raise ValueError(f"actions must be (horizon, {self.action_dim}), got {a.shape}")
        if not 1 <= action_dims <= self.action_dim:
            raise ValueError(f"action_dims must be in [1, {self.action_dim}], got {action_dims}")
        if not np.all(np.isfinite(a)):
            raise ValueError("model actions contain NaN or inf")
        return unnormalize(a, self.stats.actions, self.method)[:, :action_dims].astype(np.float32)


__all__ = ["EPS", "FeatureStats", "METHODS", "NormStats", "Normalizer", "normalize", "pad_to",
           "unnormalize"]
