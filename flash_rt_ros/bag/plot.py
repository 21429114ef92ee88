"""The comparison as a picture (matplotlib, Agg backend: no display needed).

Top row: the worst chunks (lowest cosine), reference trajectories solid and engine
trajectories dashed, one colour per action dim, against time from the observation.
Below: cosine per chunk and max |error| per chunk over the episode, with the threshold.
"""
from __future__ import annotations

import numpy as np


def write_plot(path, report: dict, ranked_pairs: list, title: str = "", worst: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ranked_pairs[:min(worst, len(report["worst"]))]
    ncols = max(1, len(shown))
    fig = plt.figure(figsize=(5 * ncols, 10), constrained_layout=True)
    grid = fig.add_gridspec(3, ncols, height_ratios=[1.4, 1, 1])
    cmap = plt.get_cmap("tab10")
    for i, pair in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        steps = np.arange(pair.ref.actions.shape[0]) * pair.ref.control_period_ns / 1e9
        names = list(pair.ref.joint_names) + [""] * pair.ref.actions.shape[1]
        for j in range(pair.ref.actions.shape[1]):
            ax.plot(steps, pair.ref.actions[:, j], color=cmap(j % 10), lw=1.5,
                    label=names[j] or f"dim {j}")
            ax.plot(steps, pair.eng.actions[:, j], color=cmap(j % 10), lw=1.2, ls="--")
        if i == 0:
            ax.legend(fontsize=7, ncol=2, loc="best")
        t = report["worst"][i]["time_s"]  # same order as ranked_pairs
        ax.set_title(f"t={t:.2f} s  cosine {pair.cosine:.6f}\nmax |err| {pair.max_abs:.3g}",
                     fontsize=9)
        ax.set_xlabel("time from observation (s)")
        if i == 0:
            ax.set_ylabel("action (robot units)\nsolid: reference, dashed: engine")
    if not shown:
        ax = fig.add_subplot(grid[0, :])
        ax.text(0.5, 0.5, "no matched chunks", ha="center", va="center")
        ax.set_axis_off()
    rows = sorted(report["chunks"], key=lambda r: r["time_s"])
    times = [r["time_s"] for r in rows]
    ax = fig.add_subplot(grid[1, :])
    ax.plot(times, [r["cosine"] for r in rows], "o-", ms=3)
    ax.axhline(report["thresholds"]["min_cosine"], color="red", ls=":", label="threshold")
    ax.set_ylabel("cosine per chunk")
    ax.legend(loc="lower left", fontsize=8)
    ax = fig.add_subplot(grid[2, :])
    ax.plot(times, [r["max_abs"] for r in rows], "o-", ms=3, color="tab:orange")
    if report["thresholds"].get("max_abs") is not None:
        ax.axhline(report["thresholds"]["max_abs"], color="red", ls=":")
    ax.set_ylabel("max |engine - reference|")
    ax.set_xlabel("observation time in the episode (s)")
    s = report["summary"]
    head = f"{report['verdict'].upper()}: {s['matched']} matched chunks"
    if s["cosine"]:
        head += (f", cosine min {s['cosine']['min']:.6f} / p5 {s['cosine']['p5']:.6f} / "
                 f"median {s['cosine']['median']:.6f}")
    fig.suptitle(f"{title}\n{head}" if title else head, fontsize=11)
    fig.savefig(path, dpi=90)
    plt.close(fig)
