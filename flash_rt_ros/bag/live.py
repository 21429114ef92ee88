"""Replay a bag through the live policy node over DDS, at bag timing on a simulated clock.

The real node (``python -m flash_rt_ros.policy_node``) starts as a child process with
exactly the parameters the offline replay uses (``seed_mode: stamp``: the noise of a chunk
depends on its observation only) plus ``use_sim_time: true`` and ``qos: reliable`` (no
frame lost to best-effort delivery). Once its subscriptions are matched, this process
publishes ``/clock`` and the bag's input messages, byte for byte as recorded, at bag timing
(``rate`` scales the wall-clock pace, not the simulated clock): ``/clock`` is set to each
message's log time before the message and to each timer tick time
(:func:`observations.timeline`). Before a tick, the inputs published so far are waited
for (acknowledged by the node, then a short pause for its callbacks), so the node's tick
sees what the offline replay sees. The node's chunks are recorded raw, logged at the
simulated time they arrived; when the bag is over and no chunk has come for ``settle_s``,
the node is stopped with SIGINT.

``lockstep`` (default): at each tick where the node's rules (run here on the same
messages) say a chunk is due, the clock stands still until the chunk arrives (at most
``chunk_timeout_s``), as a simulator steps with its controller. Every engine, however
slow, then computes every chunk, and no predict competes with the replay for the CPU.
Without it the bag plays free-running at ``rate``: ticks that find a predict still
running are overruns and have no chunk, as on a robot.

A chunk whose inputs the node saw differently (a frame still in flight at a tick) carries
other input stamps than any reference chunk; ``compare`` reports it instead of comparing it.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from flash_rt_ros import processes
from flash_rt_ros.bag.observations import OfflineNode, input_topics, timeline
from flash_rt_ros.bag.reader import BagReader
from flash_rt_ros.bag.types import ACTION_CHUNK
from flash_rt_ros.bag.writer import BagWriter
from flash_rt_ros.chunks import NS
from flash_rt_ros.params import NODE_NAME, NodeParams

FORCED = {"use_sim_time": True, "qos": "reliable"}
# Wall time the clock stands still before and after a tick: the node's executor takes the
# inputs published before the tick, then the tick's /clock (and fires its timer), before
# the clock moves on. Longer is safer on a loaded machine; a tick whose inputs were still
# in flight is reported by compare, never compared.
TICK_GAP_S = 0.1


def resolve_topic(name: str) -> str:
    """A node-relative topic name (``~/x``, ``x``) as seen from outside the node."""
    if name.startswith("~/"):
        return f"/{NODE_NAME}/{name[2:]}"
    return name if name.startswith("/") else "/" + name


def _msg_class(msgtype: str):
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class _Player:
    """Publishes ``/clock`` and raw bag messages; records the node's chunks (raw)."""

    def __init__(self, msgtypes: dict, chunk_topic: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self._rclpy, self._Clock = rclpy, Clock
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("flash_rt_bag_player", context=self.ctx)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {t: self.node.create_publisher(_msg_class(m), t, qos)
                     for t, m in msgtypes.items()}
        self.clock_pub = self.node.create_publisher(Clock, "/clock", qos)
        self.now_ns = 0
        self.chunks: list[tuple[int, bytes]] = []
        self.last_chunk = time.monotonic()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.sub = self.node.create_subscription(
            _msg_class(ACTION_CHUNK), chunk_topic, self._on_chunk,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_chunk(self, raw: bytes) -> None:
        with self._arrived:
            self.chunks.append((self.now_ns, bytes(raw)))
            self.last_chunk = time.monotonic()
            self._arrived.notify_all()

    def _spin(self) -> None:
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # noqa: BLE001 - context shut down under us
            pass

    def matched(self) -> bool:
        """Every input, /clock and the chunk output are matched with the node."""
        return (all(p.get_subscription_count() > 0 for p in self.pubs.values())
                and self.clock_pub.get_subscription_count() > 0
                and self.sub.get_publisher_count() > 0)

    def clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time

        with self._lock:
            self.now_ns = t_ns
        self.clock_pub.publish(self._Clock(clock=Time(sec=t_ns // NS, nanosec=t_ns % NS)))

    def publish(self, topic: str, raw: bytes) -> None:
        self.pubs[topic].publish(raw)

    def chunk_count(self) -> int:
        with self._lock:
            return len(self.chunks)

    def received(self) -> list[tuple[int, bytes]]:
        """(simulated time of arrival, raw ActionChunk) of every chunk so far."""
        with self._lock:
            return list(self.chunks)

    def wait_chunk(self, count: int, timeout_s: float) -> bool:
        """Wait until more than ``count`` chunks were received; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.chunks) > count, timeout_s)

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded) until the node has acknowledged every input published so far."""
        from rclpy.duration import Duration

        for pub in self.pubs.values():
            pub.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * NS)))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.ctx)
        self._thread.join(2)


class _Pace:
    """Bag time to wall time, scaled by ``rate``. When publishing falls behind (a loaded
    machine), the rest of the bag is played later instead of in a burst: the node's
    ``/clock`` reader keeps only the newest time, so a burst would skip its tick times."""

    def __init__(self, rate: float):
        self.rate, self.start = rate, None

    def wait(self, offset_ns: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        delay = self.start + offset_ns / NS / self.rate - now
        if delay > 0:
            time.sleep(delay)
        else:
            self.start -= delay

    def hold(self, seconds: float, sleep: bool = True) -> None:
        """Keep the clock still for ``seconds`` of wall time (the schedule moves on later)."""
        if sleep:
            time.sleep(seconds)
        self.start += seconds


def _node_args(p: NodeParams, tmp: Path) -> list[str]:
    """The node's command line: every parameter of ``p`` (the configuration the offline
    replay used) in one params file, plus the replay's forced settings."""
    values = {}
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if isinstance(v, tuple):
            if not v:
                continue  # an empty list has no ROS type; the declared default applies
            v = list(v)
        values[f.name] = v
    values.update(FORCED)
    path = tmp / "replay_params.yaml"
    path.write_text(yaml.safe_dump({NODE_NAME: {"ros__parameters": values}}))
    return ["-m", "flash_rt_ros.policy_node", "--ros-args", "--params-file", str(path)]


def _tail(path: Path, n: int = 30) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def replay_through_node(bag, p: NodeParams, out, *, rate: float = 1.0, lockstep: bool = True,
                        chunk_timeout_s: float = 120.0, settle_s: float = 3.0,
                        startup_timeout_s: float = 300.0, storage: str = "mcap",
                        overwrite: bool = False, node_log=None, custom: dict | None = None,
                        log=sys.stderr) -> dict:
    """Play ``bag`` to a live node configured with ``p`` (``p.hardware`` is the engine);
    record its chunks to ``out``. Returns a summary."""
    if rate <= 0:
        raise ValueError("--rate must be > 0")
    out = Path(out)
    node_log = Path(node_log) if node_log else out.parent / f"{out.name}.node.log"
    chunk_topic = resolve_topic(p.action_chunk_topic)
    reader = BagReader(bag)
    player = node = None
    # SIGTERM must still stop the node (the finally below), not orphan it.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        topics = input_topics(reader, p)
        with tempfile.TemporaryDirectory() as tmp, open(node_log, "w") as nlog:
            node = processes.start(_node_args(p, Path(tmp)),
                                   stdout=nlog, stderr=subprocess.STDOUT)
            player = _Player({t: reader.topics[t] for t in topics}, chunk_topic)
            print(f"  node started (pid {node.pid}, log {node_log}); waiting for it to "
                  "subscribe", file=log, flush=True)
            _wait_matched(player, node, node_log, startup_timeout_s)
            stats = _play(reader, p, player, node, node_log, rate, lockstep, chunk_timeout_s)
            print(f"  published {stats['published']} messages; waiting for the last chunks",
                  file=log, flush=True)
            ended = time.monotonic()
            while time.monotonic() - max(ended, player.last_chunk) < settle_s:
                if node.poll() is not None:
                    break
                time.sleep(0.1)
            processes.stop(node, timeout=10.0)
        chunks = player.received()
        meta = {"flash_rt.mode": "node", "flash_rt.source_bag": str(bag), "flash_rt.rate": rate,
                "flash_rt.lockstep": lockstep, "flash_rt.node_topic": chunk_topic,
                **(custom or {})}
        with BagWriter(out, storage, meta, overwrite) as writer:
            for t, raw in chunks:
                writer.write_raw("/replay/action_chunk", ACTION_CHUNK, t, raw)
        return {"chunks": len(chunks), **stats, "out": str(out), "node_log": str(node_log),
                "topic": "/replay/action_chunk"}
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if node is not None:
            processes.stop(node, timeout=10.0)
        if player is not None:
            player.close()
        reader.close()


def _wait_matched(player: _Player, node, node_log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not player.matched():
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with status {node.returncode} before "
                               f"subscribing:\n{_tail(node_log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node did not subscribe within {timeout_s} s:\n"
                               f"{_tail(node_log)}")
        time.sleep(0.1)
    time.sleep(0.5)  # let discovery settle on the node's side as well


def _play(reader: BagReader, p: NodeParams, player: _Player, node, node_log: Path,
          rate: float, lockstep: bool, chunk_timeout_s: float) -> dict:
    """Publish the timeline; in lockstep, hold the clock at each tick that should yield a
    chunk (per the node's own rules, run here on the same messages) until it arrives."""
    expect = OfflineNode(p)
    events = timeline(reader, p)
    first = next(events, None)
    if first is None:
        raise RuntimeError(f"{reader.path}: no input messages")
    t0 = first[0]
    player.clock(t0 - 1)  # the node's first timer call, before any input
    time.sleep(0.5)
    pace = _Pace(rate)
    published = late = 0
    for t, m in itertools.chain([first], events):
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with status {node.returncode} during the "
                               f"replay:\n{_tail(node_log)}")
        pace.wait(t - t0)
        obs = expect.step(reader, t, m) if lockstep else None
        if obs is not None:
            expect.asm.release(obs)
        before = player.chunk_count()
        if m is None or obs is not None:  # a tick: what came before it must be handled first
            player.flush()
            pace.hold(TICK_GAP_S)
        if m is None:
            player.clock(t)
        else:
            if t > player.now_ns:
                player.clock(t)
            player.publish(m.topic, m.raw)
            published += 1
        if obs is not None:  # the clock stands still until the node's chunk is out
            t_wait = time.monotonic()
            if not player.wait_chunk(before, chunk_timeout_s):
                late += 1
            pace.hold(time.monotonic() - t_wait, sleep=False)
        elif m is None:
            pace.hold(TICK_GAP_S)
    return {"published": published, "expected_chunks_missing": late}
