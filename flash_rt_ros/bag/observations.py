"""The node's input side on a bag's clock: which bag messages it reads, when it ticks, and
the observations it would infer on (no rclpy).

The bag's log time is the clock (as ``/clock`` under ``use_sim_time`` when the live node
replays it). Messages are fed in log-time order through the node's own input functions
(:mod:`flash_rt_ros.inputs`) into its :class:`ObservationAssembler`, and ticks follow the
node's :class:`Ticker`:

- ``trigger: timer``: the node's timer under sim time fires at the multiples of its
  period (it is created at sim time 0, before the first ``/clock``), so ticks are the
  multiples of the period from the first to the last message. A message logged exactly
  at a tick time is not yet seen by that tick.
- ``trigger: camera``: a tick after each frame of the last camera, at its log time.

``stamp_source: receipt`` stamps an input with its log time (the clock when it arrived);
with ``header`` stamps, one more than ``future_stamp_tolerance_s`` after its log time is
refused (``future_stamp``), as the node refuses it. A malformed message is counted and
dropped (``malformed/<source>/<cause>``) as in the node.
"""
from __future__ import annotations

from typing import Iterator, Optional

from flash_rt_ros.assembly import Observation, ObservationAssembler
from flash_rt_ros.bag.reader import BagMessage, BagReader
from flash_rt_ros.bag.types import COMPRESSED_IMAGE, IMAGE, JOINT_STATE, STRING
from flash_rt_ros.inputs import (InputClock, joint_sources, malformed_key, write_camera,
                                 write_joint_state)
from flash_rt_ros.params import NodeParams, transports
from flash_rt_ros.stats import Counters
from flash_rt_ros.tick import Ticker, timer_period_ns


def input_topics(reader: BagReader, p: NodeParams) -> list[str]:
    """The bag topics the node subscribes to; BagError if one is missing or mistyped."""
    topics = []
    for i, (topic, kind) in enumerate(zip(p.camera_topics, transports(p))):
        reader.require(topic, [COMPRESSED_IMAGE if kind == "compressed" else IMAGE],
                       f"camera {i}, {kind}")
        topics.append(topic)
    if p.state_source != "none":
        for topic in p.joint_state_topics:
            reader.require(topic, [JOINT_STATE], "joint states")
            topics.append(topic)
    return topics


def timeline(reader: BagReader, p: NodeParams) -> Iterator[tuple[int, Optional[BagMessage]]]:
    """(time, message) for the node's input messages in log-time order, with
    (time, None) for each timer tick in between (timer trigger only)."""
    period = timer_period_ns(p.rate_hz) if p.trigger == "timer" else 0
    next_tick = None
    for m in reader.messages(input_topics(reader, p)):
        if period:
            if next_tick is None:
                next_tick = -(-m.log_time_ns // period) * period  # first multiple >= t0
            while next_tick <= m.log_time_ns:
                yield next_tick, None
                next_tick += period
        yield m.log_time_ns, m


class OfflineNode:
    """Feeds a bag to the node's assembler and yields the observations it would infer on."""

    def __init__(self, p: NodeParams):
        self.p = p
        self.num_cams = len(p.camera_topics)
        self.asm = ObservationAssembler.for_params(p)
        self.counters = Counters()
        self.ticker = Ticker(self.asm, p, self.counters)
        self._cams = {t: (i, k) for i, (t, k) in enumerate(zip(p.camera_topics, transports(p)))}
        self._joints = dict(zip(p.joint_state_topics, joint_sources(p)))
        self._clock = InputClock(p)

    def _feed(self, m: BagMessage, msg) -> bool:
        """Write one message; True when it is a frame of the last camera."""
        cam = self._cams.get(m.topic)
        source = f"camera{cam[0]}" if cam else self._joints[m.topic]
        try:
            stamp = self._clock.stamp(msg, m.log_time_ns)  # the log time: the clock on arrival
            if cam:
                write_camera(self.asm, cam[0], cam[1], msg, stamp)
            else:
                write_joint_state(self.asm, msg, stamp)
        except Exception as exc:  # noqa: BLE001 - a bad message is dropped, as in the node
            self.counters.inc(malformed_key(source, exc))
            return False
        return bool(cam) and cam[0] == self.num_cams - 1

    def step(self, reader: BagReader, t: int, m: Optional[BagMessage]) -> Optional[Observation]:
        """Advance to timeline event (t, m): feed the message, or tick. Returns the
        observation the node infers on now (held: ``asm.release`` it), or None."""
        if m is not None:
            if not (self._feed(m, reader.decode(m)) and self.p.trigger == "camera"):
                return None
        return self.ticker.tick(t)

    def observations(self, reader: BagReader) -> Iterator[tuple[int, Observation]]:
        """(tick time, observation) for every tick that yields one; the observation's
        slots are released when the caller asks for the next one."""
        for t, m in timeline(reader, self.p):
            obs = self.step(reader, t, m)
            if obs is None:
                continue
            try:
                yield t, obs
            finally:
                self.asm.release(obs)


def resolve_prompt(reader: BagReader, explicit: Optional[str], topic: str,
                   p: NodeParams) -> str:
    """The episode's task prompt: ``explicit``, else the first std_msgs/String on ``topic``
    in the bag, else the params file's ``prompt``. It is fixed for the whole replay (the
    live node gets it as its ``prompt`` parameter) and recorded in every chunk."""
    if explicit is not None:
        return explicit
    if reader.topics.get(topic) == STRING:
        for _, msg in reader.decoded([topic]):
            return msg.data
    if p.prompt:
        return p.prompt
    raise ValueError(f"no prompt: pass --prompt, or record a std_msgs/String on {topic}, "
                     "or set prompt in the params file")
