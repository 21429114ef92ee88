"""When the node takes an observation, and which one (no rclpy).

The live node calls :meth:`Ticker.tick` from its timer (``trigger: timer``) or after each
frame of the last camera (``trigger: camera``); the rosbag tools call it at the same
times of the bag's clock. Rate limiting, overrun counting, staleness and the
``skipped/<reason>`` counters therefore follow one rule in both.

The freshness rule is applied twice: when the observation is taken, and again by
:meth:`Ticker.publishable` right before the chunk computed from it is published, because
predict (or a CPU starved by a burst of frames) takes time: a chunk whose stalest input
has aged past ``max_observation_age_s`` by then is dropped and counted, never published.
"""
from __future__ import annotations

from typing import Callable, Optional

from flash_rt_ros.assembly import NotReady, Observation, ObservationAssembler, age_problem
from flash_rt_ros.params import NodeParams
from flash_rt_ros.stats import Counters


def timer_period_s(rate_hz: float) -> float:
    """The period the node's timer is created with."""
    return 1.0 / rate_hz


def timer_period_ns(rate_hz: float) -> int:
    """That period in ns, converted as rclpy's ``create_timer`` converts it."""
    return int(float(timer_period_s(rate_hz)) * 1_000_000_000)


class Ticker:
    """Decides at each tick whether to infer, and snapshots the observation if so."""

    def __init__(self, asm: ObservationAssembler, p: NodeParams, counters: Counters,
                 on_skip: Optional[Callable[[str, NotReady], None]] = None):
        self.asm, self.counters = asm, counters
        self.camera_trigger = p.trigger == "camera"
        self.period_ns = int(1e9 / p.rate_hz)
        self.max_age_ns = int(p.max_observation_age_s * 1e9)
        self.max_lead_ns = int(p.future_stamp_tolerance_s * 1e9)
        self._on_skip = on_skip
        self._last_tick_ns = 0

    def tick(self, now_ns: int, busy: bool = False) -> Optional[Observation]:
        """The observation to infer on now (held until ``asm.release``), or None: rate
        limited (camera faster than ``rate_hz``), overrun (``busy``: the previous predict
        still runs) or not ready (missing/stale/non-finite input, counted per reason)."""
        if self.camera_trigger and now_ns - self._last_tick_ns < self.period_ns * 0.9:
            return None  # camera faster than rate_hz: rate limit, not an overrun
        self.counters.inc("ticks")
        if busy:
            self.counters.inc("overruns")
            return None
        self._last_tick_ns = now_ns
        try:
            return self.asm.snapshot(now_ns, self.max_age_ns, self.max_lead_ns)
        except NotReady as exc:
            key = f"skipped/{exc.reason}"
            self.counters.inc(key)
            if exc.source:  # which camera keeps going stale, for the diagnostics
                self.counters.inc(f"{key}/{exc.source}")
            if self._on_skip is not None:
                self._on_skip(key, exc)
            return None

    def publishable(self, obs: Observation, now_ns: int) -> str:
        """"" if a chunk computed from ``obs`` may be published at ``now_ns``; else why not
        (counted as ``dropped_chunks/<why>``): its stalest input is older than the max age
        (``stale_input``), or its newest is ahead of the clock (``future_input``: the clock
        went back during predict)."""
        why = (age_problem(now_ns, obs.oldest_stamp_ns, self.max_age_ns, self.max_lead_ns)
               or age_problem(now_ns, obs.stamp_ns, self.max_age_ns, self.max_lead_ns))
        if not why:
            return ""
        key = f"{why}_input"
        self.counters.inc(f"dropped_chunks/{key}")
        return key
