"""What the arm executes around chunk switches, on a recorded episode.

The episode (``flash_rt_ros.bag`` make-episode: cameras and a smooth joint trajectory) is
replayed through the node's own code: its assembly and ticks pick the observations, and
``TrajectoryPlanner`` turns each chunk into the published trajectory, which is executed as
ros2_control's joint_trajectory_controller samples trajectories (linear between points,
each new trajectory starting from the position at its arrival).

The chunks come from a stand-in policy whose errors are those that make switching jerk: it
predicts the recorded future joint positions from the observation time on, plus an error
drawn anew for every chunk (an offset and a drift, as a new noise sample of a real policy
gives). A random-weight checkpoint would only show noise; the trajectory timing and the
blend do not depend on where the actions come from. Each chunk arrives ``--latency-ms``
after its observation.

Three ways of executing the same chunks: ``trajectory_stamp: receipt`` (each chunk played
from its first action on arrival: late by the latency), ``observation`` (the point due
now: on time, but a step at each switch), and ``observation`` with ``blend_steps`` (on time,
no step). Writes the plot and prints, for each, the largest change of the command between
two control cycles at a switch and the RMS error against the recorded trajectory.

    python bench/chunk_execution.py --out docs/img/chunk_execution.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from flash_rt_ros.bag.episode import EpisodeSpec, write_episode
from flash_rt_ros.bag.observations import OfflineNode
from flash_rt_ros.bag.reader import BagReader
from flash_rt_ros.execution import TrajectoryPlanner, sample
from flash_rt_ros.params import load_params_file
from flash_rt_ros.processes import find_config

CONTROL_HZ = 500  # the controller's update rate in the simulation


def recorded_joint(reader: BagReader, topic: str, joint: int) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns, positions) of one joint in the bag."""
    t, x = [], []
    for _, msg in reader.decoded([topic]):
        t.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        x.append(msg.position[joint])
    return np.asarray(t, np.float64), np.asarray(x, np.float64)


def replay_chunks(bag: str, p, latency_ns: int, rng) -> list[tuple[int, int, np.ndarray]]:
    """(observation ns, arrival ns, actions) of every chunk the node would compute on
    ``bag`` (its ticks and observations), from the stand-in policy."""
    period = int(p.control_period_s * 1e9)
    out = []
    with BagReader(bag) as reader:
        truth_t, truth_x = recorded_joint(reader, p.joint_state_topics[0], 0)
        for tick_ns, obs in OfflineNode(p).observations(reader):
            due = obs.stamp_ns + (np.arange(p.horizon) + 1) * period
            err = rng.normal(0, 0.04) + rng.normal(0, 0.1) * (due - obs.stamp_ns) / 1e9
            actions = (np.interp(due, truth_t, truth_x) + err)[:, None]
            out.append((obs.stamp_ns, tick_ns + latency_ns, actions.astype(np.float32)))
    return out, (truth_t, truth_x)


def execute(chunks, period_ns: int, stamp: str, blend_steps: int, t_ns: np.ndarray):
    """The commanded position at each time of ``t_ns`` (first joint)."""
    planner = TrajectoryPlanner(stamp, blend_steps)
    active, before, k = None, None, 0
    pos = np.full(len(t_ns), np.nan)
    for i, t in enumerate(t_ns):
        while k < len(chunks) and chunks[k][1] <= t:
            obs_ns, arrival, actions = chunks[k]
            traj = planner.plan(actions, period_ns, obs_ns, arrival)
            # the controller starts a new trajectory from where it is at its arrival
            before = None if active is None else sample(active[0], arrival, active[1])
            active, k = (traj, before), k + 1
        if active is not None:
            pos[i] = sample(active[0], t, active[1])[0]
    return pos


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=120.0,
                    help="observation to arrival at the controller")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blend-steps", type=int, default=10)
    ap.add_argument("--rate", type=float, default=5.0, help="chunks per second")
    ap.add_argument("--out", default="docs/img/chunk_execution.png")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        spec = EpisodeSpec(cameras=2, width=160, height=120, duration_s=4.0)
        bag = os.path.join(tmp, "episode")
        info = write_episode(bag, spec)
        p = load_params_file(find_config("pi05_cpu.yaml"), {
            "camera_topics": info["camera_topics"], "joint_state_topics": [spec.joint_topic],
            "rate_hz": args.rate, "horizon": 50, "control_period_s": 0.02})
        chunks, (truth_t, truth_x) = replay_chunks(bag, p, int(args.latency_ms * 1e6),
                                                   np.random.default_rng(args.seed))
    period = int(p.control_period_s * 1e9)
    t0 = chunks[1][1]  # from the second arrival on (the first has nothing to switch from)
    t_ns = np.arange(t0, chunks[-1][1] + period, 1e9 // CONTROL_HZ, dtype=np.int64)
    runs = {"receipt stamp (starts the chunk late)": ("receipt", 0),
            "observation stamp": ("observation", 0),
            f"observation stamp + cross-fade over {args.blend_steps} points":
                ("observation", args.blend_steps)}
    arrivals = [a for _, a, _ in chunks if t0 <= a <= t_ns[-1]]
    summary = {"chunks": len(chunks), "latency_ms": args.latency_ms,
               "chunk_rate_hz": args.rate, "control_period_ms": p.control_period_s * 1e3}
    truth = np.interp(t_ns, truth_t, truth_x)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax_v) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    secs = (t_ns - t0) / 1e9
    for label, (stamp, k) in runs.items():
        pos = execute(chunks, period, stamp, k, t_ns)
        step = np.abs(np.diff(pos))
        near = np.zeros(len(step), bool)  # control cycles right at a chunk's arrival
        for a in arrivals:
            near |= (t_ns[1:] >= a) & (t_ns[1:] < a + 2 * 1e9 // CONTROL_HZ)
        summary[label] = {"max_step_at_switch": round(float(step[near].max()), 4),
                          "max_step_elsewhere": round(float(step[~near].max()), 4),
                          "rms_error_vs_recorded": round(float(np.sqrt(np.mean(
                              (pos - truth) ** 2))), 4)}
        ax.plot(secs, pos, label=label, lw=1.2)
        ax_v.plot(secs[1:], np.diff(pos) * CONTROL_HZ, lw=0.9)
    ax.plot(secs, truth, "k--", lw=0.8, label="recorded (what the chunks aim at)")
    for a in arrivals:
        for axis in (ax, ax_v):
            axis.axvline((a - t0) / 1e9, color="0.8", lw=0.6, zorder=0)
    ax.set_ylabel("joint0 command (rad)")
    ax.set_title(f"joint0 as executed around chunk switches (grey: arrivals, {args.rate:g} "
                 f"chunks/s, {args.latency_ms:g} ms after their observation)", fontsize=9)
    ax.legend(fontsize=8)
    ax_v.set_ylabel("command velocity (rad/s)")
    ax_v.set_xlabel("s")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
