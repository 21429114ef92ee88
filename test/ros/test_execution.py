"""Chunk execution: the trajectory's stamp and point times put the controller at the
right point of a chunk despite the inference latency, and the optional cross-fade joins a
new chunk to the rest of the previous one without a jump."""
from __future__ import annotations

import numpy as np
import pytest

from flash_rt_ros.execution import (TrajectoryPlanner, first_future_point, point_times_ns,
                                    sample)

MS = 1_000_000
PERIOD = 20 * MS
T_OBS = 1_000_000 * MS  # observation time


def _chunk(horizon=50, joints=2, offset=0.0):
    t = np.arange(horizon, dtype=np.float64)[:, None]
    return (offset + 0.01 * t + np.arange(joints)[None, :]).astype(np.float32)


def test_point_t_is_due_t_plus_one_periods_after_the_observation():
    traj = TrajectoryPlanner("observation").plan(_chunk(), PERIOD, T_OBS, T_OBS + 130 * MS)
    assert traj.stamp_ns == T_OBS
    assert traj.times_ns[0] == PERIOD and traj.times_ns[6] == 7 * PERIOD
    np.testing.assert_array_equal(traj.times_ns, point_times_ns(50, PERIOD))


@pytest.mark.parametrize("latency_ms", [0.5, 37.0, 130.0, 410.0])
def test_controller_starts_at_the_point_due_now_whatever_the_latency(latency_ms):
    """Arriving L after the observation, the controller samples at now = T_obs + L: the
    chunk's own target for that instant (action t is due at T_obs + (t+1) period), not
    its first action."""
    actions = _chunk()
    now = T_OBS + int(latency_ms * MS)
    traj = TrajectoryPlanner("observation").plan(actions, PERIOD, T_OBS, now)
    k = first_future_point(traj, now)
    assert k == int(latency_ms * MS // PERIOD)  # points 0..k-1 are already in the past
    due_prev, due_next = T_OBS + k * PERIOD, T_OBS + (k + 1) * PERIOD
    frac = (now - due_prev) / (due_next - due_prev)
    want = actions[k] if k == 0 else (1 - frac) * actions[k - 1] + frac * actions[k]
    if k == 0:  # before the first point: held (the controller interpolates from its state)
        want = actions[0]
    np.testing.assert_allclose(sample(traj, now), want, rtol=0, atol=1e-6)


def test_receipt_stamp_replays_the_chunk_late_by_the_latency():
    actions = _chunk()
    now = T_OBS + 130 * MS
    traj = TrajectoryPlanner("receipt").plan(actions, PERIOD, T_OBS, now)
    assert traj.stamp_ns == 0 and traj.start_ns == now  # "start on receipt"
    # at now + period the arm is at action 0, the target for T_obs + period: 130 ms late
    np.testing.assert_allclose(sample(traj, now + PERIOD), actions[0], atol=1e-6)


def test_crossfade_starts_where_the_previous_trajectory_is_and_ends_on_the_new_chunk():
    k = 5
    planner = TrajectoryPlanner("observation", blend_steps=k)
    first = planner.plan(_chunk(offset=0.0), PERIOD, T_OBS, T_OBS + 100 * MS)
    t2_obs = T_OBS + 200 * MS
    now = t2_obs + 100 * MS
    new = _chunk(offset=0.5)  # disagrees with the previous chunk by 0.5 everywhere
    second = planner.plan(new, PERIOD, t2_obs, now)
    # at publication the blended trajectory is exactly where the previous one was
    np.testing.assert_allclose(sample(second, now), sample(first, now), atol=1e-9)
    due = second.start_ns + second.times_ns
    # from k periods after publication on, the new chunk alone
    full = due >= now + k * PERIOD
    np.testing.assert_allclose(second.positions[full], new[full], atol=1e-6)
    # in between, a linear ramp: never a step larger than the two chunks' own slopes
    steps = np.abs(np.diff(second.positions[:, 0]))
    assert steps.max() <= 0.5 / k + 0.01 + 1e-9
    unblended = TrajectoryPlanner("observation").plan(new, PERIOD, t2_obs, now)
    jump = np.abs(sample(unblended, now) - sample(first, now)).max()
    assert jump > 0.4  # what the arm would have jumped by without blending


def test_no_blend_for_the_first_chunk_and_after_forget():
    planner = TrajectoryPlanner("observation", blend_steps=4)
    a = _chunk()
    np.testing.assert_array_equal(planner.plan(a, PERIOD, T_OBS, T_OBS).positions, a)
    planner.forget()
    b = _chunk(offset=1.0)
    np.testing.assert_array_equal(planner.plan(b, PERIOD, T_OBS, T_OBS).positions, b)
