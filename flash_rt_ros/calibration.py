"""When the node calibrates the fast path's FP8 activation scales, and on what (no rclpy).

The GPU frontends quantise activations with static scales (docs/api.md, *Calibration*):
``policy.calibrated`` says whether they hold scales (from the calibration cache at load, or
from a calibration since), ``policy.recalibrate(observations, percentile)`` measures them on
real observations (dicts of ``predict`` keyword arguments), and a ``predict`` on an
uncalibrated frontend calibrates on its own inputs first. The cpu reference has neither (it
runs FP32): calibration does not apply there.

The node's rules, kept here so they can be tested without a GPU:

- **Warm-up never calibrates.** A frontend without scales gets no ``predict`` on blank
  frames at start-up (that call would make black images and a zero state its FP8 scales).
- **The first real observations calibrate.** The first ``calibration_frames`` observations
  that pass every freshness check are copied; ``recalibrate`` runs on them, then one
  ``predict`` on the newest of them captures the CUDA Graph for the cameras' sizes. Nothing
  is published from them, nor before them.
- **Scales from the cache** need no observation; the first observation only captures the
  graph (it is not published: its chunk would be late by the capture time).
- **Recalibration on request** (the ``~/recalibrate`` service) collects the next
  ``calibration_frames`` observations the same way while chunks keep flowing with the
  current scales; the new scales apply from the chunk after the last of them.
"""
from __future__ import annotations

import numpy as np

NOT_APPLICABLE = "not_applicable"  # the frontend has no quantised activations (cpu)
COLLECTING = "collecting"  # taking real observations to calibrate on
CAPTURING = "capturing"  # scales in place; the next observation captures the graph
CALIBRATED = "calibrated"


def has_calibration(policy) -> bool:
    """True for a frontend with FP8 activation scales (the GPU fast paths)."""
    return hasattr(policy, "calibrated") and callable(getattr(policy, "recalibrate", None))


def may_warm_up(policy) -> bool:
    """Whether a predict on blank frames is safe: never on a frontend without scales."""
    return not has_calibration(policy) or bool(policy.calibrated)


def copy_inputs(inputs: dict) -> dict:
    """``predict`` keyword arguments that outlive the observation's held camera slots."""
    out = dict(inputs)
    out["images"] = [None if im is None else np.array(im, copy=True) for im in inputs["images"]]
    out["state"] = np.array(inputs["state"], copy=True)
    return out


class Calibration:
    """The calibration state of one policy, driven by the node's inference worker."""

    def __init__(self, policy, frames: int):
        self.policy, self.frames_needed = policy, int(frames)
        self.count = 0  # calibrations the node ran
        self.last_report: dict = {}
        self.newest_stamp_ns = 0  # of the observations the last calibration used
        self._frames: list[dict] = []
        self._stamps: list[int] = []
        self._requested = False
        if not has_calibration(policy):
            self.state, self.source = NOT_APPLICABLE, "none"
        elif policy.calibrated:
            self.state, self.source = CAPTURING, "cache"
        else:
            self.state, self.source = COLLECTING, "none"

    @property
    def has_scales(self) -> bool:
        """Chunks may be computed: no calibration applies, or scales are in place."""
        return self.state == NOT_APPLICABLE or self.source != "none"

    @property
    def collecting(self) -> bool:
        return self.state == COLLECTING

    def request(self) -> tuple[bool, str]:
        """Recalibrate from the next observations (any thread); (accepted, what happens).
        The worker takes the request up at its next observation (:meth:`start_requested`),
        so the collected frames have a single writer."""
        if self.state == NOT_APPLICABLE:
            return False, ("nothing to calibrate: this frontend runs without FP8 activation "
                           "scales")
        if self.state == COLLECTING or self._requested:
            return True, (f"already collecting: {len(self._frames)}/{self.frames_needed} "
                          "observations")
        self._requested = True
        return True, (f"recalibrating from the next {self.frames_needed} observations; "
                      "chunks continue with the current scales until then")

    def start_requested(self) -> None:
        """Worker thread: begin collecting if a recalibration was requested."""
        if self._requested:
            self._requested = False
            self.state, self._frames, self._stamps = COLLECTING, [], []

    def add(self, inputs: dict, stamp_ns: int) -> bool:
        """Keep a copy of one observation's predict inputs; True once there are enough."""
        self._frames.append(copy_inputs(inputs))
        self._stamps.append(int(stamp_ns))
        return len(self._frames) >= self.frames_needed

    def run(self) -> dict:
        """Measure the scales on the collected observations and capture the graph on the
        newest of them (its chunk is not published); returns the engine's report."""
        frames, self._frames = self._frames, []
        first = self.source == "none"  # no graph was captured yet
        self.last_report = dict(self.policy.recalibrate(frames) or {})
        self.newest_stamp_ns = max(self._stamps)
        self._stamps = []
        self.count += 1
        self.source = "observations"
        if first:
            self.policy.predict(**frames[-1])  # capture for these camera sizes
        self.state = CALIBRATED
        return self.last_report

    def captured(self) -> None:
        """The first observation after cached scales went into a graph capture."""
        self.state = CALIBRATED

    def values(self) -> dict:
        """Diagnostics: state, where the scales came from, progress."""
        return {"calibration_state": self.state, "calibration_source": self.source,
                "calibration_frames": (f"{len(self._frames)}/{self.frames_needed}"
                                       if self.state == COLLECTING else self.frames_needed),
                "calibrations": self.count}
