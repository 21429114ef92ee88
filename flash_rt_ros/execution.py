"""How a chunk becomes the joint trajectory a controller executes (no rclpy).

Timing (``trajectory_stamp``). Action ``t`` of a chunk is the target for ``(t + 1)``
control periods after the observation it was computed from; the chunk is published an
inference latency ``L`` after that observation.

- ``observation`` (default): ``header.stamp`` is the observation time and point ``t`` has
  ``time_from_start = (t + 1) * control_period_s``, so point ``t`` is due at
  ``observation + (t + 1) * period`` on the clock the stamps use. ros2_control's
  ``joint_trajectory_controller`` samples a trajectory at the current time: the points
  already due when it arrives (``(t + 1) * period <= L``) are in the past, and the arm
  continues from the point due *now*, not from the chunk's first action. This needs the
  controller's clock to agree with the camera stamps (same machine, or synchronised).
- ``receipt``: ``header.stamp`` zero ("start on receipt"): point ``t`` is due ``(t + 1)``
  periods after the controller receives it, so the whole chunk is executed late by ``L``.
  For a controller whose clock is not synchronised with the cameras.

Blending (``blend_steps``). A new chunk usually disagrees with the remaining part of the
previous one (a new sample of the policy's noise, a newer observation), and switching
outright jerks the arm. With ``blend_steps: k`` each new trajectory is a linear cross-fade
from the previous trajectory to the new chunk: a point due at absolute time ``tau`` is
``w * new + (1 - w) * previous(tau)`` with ``w = clip((tau - now) / (k * period), 0, 1)``,
``now`` the publication time. Points already due keep the previous trajectory's values
(so the controller's sample at ``now`` is where the arm was going anyway) and the new chunk
takes over fully ``k`` periods after publication. ``previous(tau)`` samples the last
published trajectory like the controller does (linear between points, the last point held
after its end). ``~/action_chunk`` always carries the model's actions unblended.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flash_rt_ros.params import TRAJECTORY_STAMPS


@dataclass(frozen=True)
class Trajectory:
    """A planned trajectory: what ``~/joint_trajectory`` carries."""

    stamp_ns: int  # header.stamp; 0 = start on receipt
    start_ns: int  # the absolute time the points count from (stamp, or publication)
    times_ns: np.ndarray  # int64 (points,): time_from_start of each point
    positions: np.ndarray  # float64 (points, joints)


def point_times_ns(horizon: int, period_ns: int) -> np.ndarray:
    """``time_from_start`` of each point: ``(t + 1) * period``."""
    return (np.arange(horizon, dtype=np.int64) + 1) * int(period_ns)


def sample(traj: Trajectory, t_ns, before=None) -> np.ndarray:
    """Positions of ``traj`` at absolute times ``t_ns`` (scalar or array), as
    joint_trajectory_controller interpolates: linear between points, the last point held
    after the end; before the first point, linear from ``before`` (the position when the
    trajectory started, if known) or the first point held."""
    t = np.atleast_1d(np.asarray(t_ns, dtype=np.float64))
    knots = traj.start_ns + traj.times_ns.astype(np.float64)
    pos = traj.positions
    if before is not None:
        knots = np.concatenate([[float(traj.start_ns)], knots])
        pos = np.vstack([np.asarray(before, dtype=np.float64)[None, :], pos])
    out = np.stack([np.interp(t, knots, pos[:, j]) for j in range(pos.shape[1])], axis=1)
    return out if np.ndim(t_ns) else out[0]


def first_future_point(traj: Trajectory, now_ns: int) -> int:
    """Index of the first point not yet due at ``now_ns`` (== horizon if none is left)."""
    return int(np.searchsorted(traj.start_ns + traj.times_ns, now_ns, side="right"))


class TrajectoryPlanner:
    """Turns each chunk into the trajectory to publish: its stamp and, optionally, the
    cross-fade from the previously published trajectory."""

    def __init__(self, stamp: str = "observation", blend_steps: int = 0):
        if stamp not in TRAJECTORY_STAMPS:
            raise ValueError(f"trajectory_stamp must be one of {TRAJECTORY_STAMPS}, "
                             f"got {stamp!r}")
        self.stamp, self.blend_steps = stamp, int(blend_steps)
        self.previous: Trajectory | None = None

    def plan(self, actions: np.ndarray, period_ns: int, observation_ns: int,
             now_ns: int) -> Trajectory:
        """The trajectory for ``actions`` (horizon, joints) observed at ``observation_ns``
        and published at ``now_ns``."""
        positions = np.asarray(actions, dtype=np.float64).copy()
        times = point_times_ns(positions.shape[0], period_ns)
        start = observation_ns if self.stamp == "observation" else now_ns
        if self.blend_steps and self.previous is not None:
            due = start + times.astype(np.float64)
            w = np.clip((due - now_ns) / (self.blend_steps * period_ns), 0.0, 1.0)[:, None]
            positions = w * positions + (1.0 - w) * sample(self.previous, due)
        traj = Trajectory(stamp_ns=start if self.stamp == "observation" else 0,
                          start_ns=start, times_ns=times, positions=positions)
        self.previous = traj
        return traj

    def forget(self) -> None:
        """Start the next trajectory without blending (after a pause: the previous
        trajectory ended long ago and the arm holds its last point)."""
        self.previous = None
