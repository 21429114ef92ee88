"""The ROS 2 policy node: camera frames + joint states in, action chunks out.

Threads: the executor runs the subscriptions (one mutually exclusive callback group per
camera and one for all joint-state topics, so inputs decode in parallel but each input has
a single writer) and a cheap tick; inference runs on a dedicated worker thread. A tick
that finds the worker still busy is skipped and counted as an overrun rather than queued,
so a chunk is always computed from the newest observation and the subscriptions never
wait for the model.

Run: ``python -m flash_rt_ros.policy_node --ros-args --params-file config/pi05_cpu.yaml``
"""
from __future__ import annotations

import copy
import os
import sys
import threading

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from diagnostic_msgs.msg import DiagnosticArray
from trajectory_msgs.msg import JointTrajectory

from flash_rt_ros import messages
from flash_rt_ros.assembly import NotReady, ObservationAssembler
from flash_rt_ros.chunks import ChunkMaker
from flash_rt_ros.frontend import hardware_name, load_policy, warm_up
from flash_rt_ros.inputs import (InputClock, joint_sources, malformed_key, write_camera,
                                 write_joint_state)
from flash_rt_ros.malformed import MalformedFrame, brief
from flash_rt_ros.memory import start_trimming
from flash_rt_ros.params import (DEFAULTS, NODE_NAME, PARAM_NAMES, NodeParams,
                                 params_from_dict, transports)
from flash_rt_ros.startup import fatal_lines, preflight
from flash_rt.core.latency import LatencyTracker
from flash_rt_ros.shutdown import STOP_SIGNALS, is_normal_stop
from flash_rt_ros.stats import Counters, OncePerCause, RateMeter
from flash_rt_ros.tick import Ticker, timer_period_s
from flash_rt_ros_msgs.msg import ActionChunk

RUNTIME_PARAMS = {"prompt"}  # every other parameter is fixed at start-up
SENSOR_CAMERA_DEPTH = 1  # frames DDS keeps per camera (qos: sensor_data) until taken
DIAG_WINDOW = 1000  # latency samples behind the diagnostics' p50/p99
# Every parameter is declared without a fixed ROS type: rclpy would refuse ``rate_hz: 10``
# (an integer for a double) with a message naming its own internals. params_from_dict
# types and bounds every value instead, with one "<param>: <why>" line per problem.
_ANY_TYPE = ParameterDescriptor(dynamic_typing=True)


class PolicyNode(Node):
    """Assembles observations, runs the policy on a worker thread, publishes chunks."""

    def __init__(self, policy_factory=load_policy, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = p = self._read_params()
        self.num_cams = len(p.camera_topics)
        self.num_views = p.num_views or self.num_cams
        self.joint_names = list(p.joint_names)
        self.counters = Counters()
        self.infer_ms = LatencyTracker(DIAG_WINDOW)
        self.overhead_ms = LatencyTracker(DIAG_WINDOW)
        self.chunk_age_ms = LatencyTracker(DIAG_WINDOW)  # stalest input's age at publication
        self.chunk_rate = RateMeter()
        self._log_gate = OncePerCause()
        self._prev_bad: dict = {}  # diagnostics: counts at the last report, for "new" levels
        self._prev_chunks = 0
        self._prompt = p.prompt
        self._input_clock = InputClock(p)

        self.policy = policy_factory(p, self.num_views, len(self.joint_names))
        self.hardware = hardware_name(self.policy, p.hardware)
        self.checkpoint_id = str(getattr(self.policy, "checkpoint_id", "") or "")
        warm_up(self.policy, self.num_views, len(self.joint_names), p.prompt, p.seed)
        self.asm = ObservationAssembler.for_params(p)
        self.ticker = Ticker(self.asm, p, self.counters, on_skip=self._log_skip)
        self.maker = ChunkMaker(self.policy, p, self.num_views, self.hardware,
                                self.checkpoint_id)

        out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        self.chunk_pub = self.create_publisher(ActionChunk, p.action_chunk_topic, out_qos)
        self.traj_pub = (self.create_publisher(JointTrajectory, p.trajectory_topic, out_qos)
                         if p.trajectory_topic else None)
        self.diag_pub = self.create_publisher(DiagnosticArray, p.diagnostics_topic, out_qos)

        in_qos = qos_profile_sensor_data if p.qos == "sensor_data" else out_qos
        cam_qos = in_qos
        if p.qos == "sensor_data":
            # Only a camera's newest frame is ever used: a deeper queue makes a node that
            # fell behind decode older frames first (staler inputs, more CPU, more buffers
            # held). Joint states keep the depth (an arm and a gripper may share a topic),
            # and "reliable" keeps it for every input: each message is handled, in order.
            cam_qos = copy.copy(in_qos)
            cam_qos.depth = SENSOR_CAMERA_DEPTH
        self._subs = []
        for i, (topic, kind) in enumerate(zip(p.camera_topics, transports(p))):
            msg_type = CompressedImage if kind == "compressed" else Image
            self._subs.append(self.create_subscription(
                msg_type, topic, self._camera_cb(i, kind), cam_qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
        if p.state_source != "none":
            joints_group = MutuallyExclusiveCallbackGroup()  # one writer for the state vector
            for topic, source in zip(p.joint_state_topics, joint_sources(p)):
                self._subs.append(self.create_subscription(
                    JointState, topic, self._joint_state_cb(source), in_qos,
                    callback_group=joints_group))
        if p.prompt_topic:
            self._subs.append(self.create_subscription(
                String, p.prompt_topic, self._on_prompt, out_qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
        self.add_on_set_parameters_callback(self._on_set_params)

        control = MutuallyExclusiveCallbackGroup()
        if p.trigger == "timer":
            self.create_timer(timer_period_s(p.rate_hz), self._tick, callback_group=control)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=control)

        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._stop = False
        self._job = None
        self._worker = threading.Thread(target=self._work, name="flash_rt_infer", daemon=True)
        self._worker.start()
        self._trim_stop = threading.Event()
        start_trimming(self._trim_stop)
        self.get_logger().info(
            f"ready: model={p.model} hardware={self.hardware} cameras={self.num_cams} "
            f"views={self.num_views} joints={len(self.joint_names)} trigger={p.trigger} "
            f"rate={p.rate_hz} Hz max_age={p.max_observation_age_s} s "
            f"stamps={p.stamp_source} seeds={p.seed_mode} "
            f"checkpoint={self.checkpoint_id or '-'}")

    # ------------------------------------------------------------ parameters
    def _read_params(self) -> NodeParams:
        """Declare the node's parameters and return them typed and validated; refuse every
        problem at once (InvalidParams, one line each), unknown or renamed names included:
        rclpy keeps an override it has no declaration for in ``_parameter_overrides`` and
        otherwise ignores it, so a typo would leave the default silently in force."""
        values = {}
        for name in PARAM_NAMES:
            default = DEFAULTS[name]
            declared = list(default) if isinstance(default, tuple) else default
            values[name] = self.declare_parameter(name, declared, _ANY_TYPE).value
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        values.update({n: v.value for n, v in overrides.items() if not self.has_parameter(n)})
        return params_from_dict(values)

    def _prompt_error(self, prompt) -> str:
        if not isinstance(prompt, str):
            return "prompt must be a string"
        if len(prompt) > self.p.max_prompt_chars:
            return (f"prompt of {len(prompt)} characters refused: more than max_prompt_chars "
                    f"({self.p.max_prompt_chars}): {brief(prompt)!r}")
        return ""

    def _on_set_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name not in RUNTIME_PARAMS:
                return SetParametersResult(
                    successful=False,
                    reason=f"{prm.name} is fixed at start-up; only {sorted(RUNTIME_PARAMS)} "
                           "can change at runtime")
            if why := self._prompt_error(prm.value):
                return SetParametersResult(successful=False, reason=why)
        for prm in params:
            if prm.name == "prompt" and prm.value != self._prompt:
                self._prompt = prm.value
                self.get_logger().info(f"prompt set to {brief(prm.value)!r}")
        return SetParametersResult(successful=True)

    def _on_prompt(self, msg: String) -> None:
        if why := self._prompt_error(msg.data):  # checked on receipt, never stored or logged
            self._malformed("prompt", MalformedFrame("too_long", why))
            return
        self.set_parameters([Parameter("prompt", Parameter.Type.STRING, msg.data)])

    # ------------------------------------------------------------ inputs
    def _stamp(self, msg) -> int:
        """An input's time (stamp_source), refused when stamped ahead of the node's clock."""
        return self._input_clock.stamp(msg, self.get_clock().now().nanoseconds)

    def _guarded(self, source: str, write, trigger: bool = False):
        """A subscription callback: ``write(msg)`` into the assembler; a bad message is
        counted and logged (never raised: it must not stop the node); then maybe tick."""
        def callback(msg) -> None:
            try:
                write(msg)
            except Exception as exc:  # noqa: BLE001 - a bad message must never stop the node
                self._malformed(source, exc)
                return
            if trigger:
                self._tick()

        return callback

    def _camera_cb(self, cam: int, kind: str):
        asm = self.asm
        # The last camera triggers: publishers that send a synchronised set in topic order
        # then have the whole set in place when the tick snapshots it.
        trigger = self.p.trigger == "camera" and cam == self.num_cams - 1

        def write(msg) -> None:
            write_camera(asm, cam, kind, msg, self._stamp(msg))
        return self._guarded(f"camera{cam}", write, trigger)

    def _joint_state_cb(self, source: str):
        def write(msg: JointState) -> None:
            write_joint_state(self.asm, msg, self._stamp(msg))
        return self._guarded(source, write)

    def _malformed(self, source: str, exc: Exception) -> None:
        key = malformed_key(source, exc)
        n = self.counters.inc(key)
        if self._log_gate.should_log(key):
            self.get_logger().warning(f"dropped malformed input from {source} "
                                      f"({brief(exc, 200)}); {n} so far, this cause is "
                                      "logged at most every 10 s")

    # ------------------------------------------------------------ inference
    def _tick(self) -> None:
        obs = self.ticker.tick(self.get_clock().now().nanoseconds, busy=not self._idle.is_set())
        if obs is None:
            return
        self._job = (obs, self._prompt)
        self._idle.clear()
        self._wake.set()

    def _log_skip(self, key: str, exc: NotReady) -> None:
        if self._log_gate.should_log(key):
            self.get_logger().warning(f"no chunk: {exc}")

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            obs, prompt = self._job
            self._job = None
            try:
                self._infer_and_publish(obs, prompt)
            except Exception as exc:  # noqa: BLE001 - log, count, keep serving
                if self._stop or is_normal_stop(exc, self.context):
                    # SIGINT shut the context down while this chunk was computed: it has
                    # nowhere to go, and that is a normal stop, not an inference failure
                    return
                key = f"errors/inference_{type(exc).__name__}"
                self.counters.inc(key)
                if self._log_gate.should_log(key):
                    self.get_logger().error(f"inference failed: {exc!r}")
            finally:
                self.asm.release(obs)
                self._idle.set()

    def _infer_and_publish(self, obs, prompt: str) -> None:
        rec = self.maker.make(obs, prompt)
        msg = messages.action_chunk(rec)
        traj = (None if self.traj_pub is None else messages.joint_trajectory(
            rec.actions, self.joint_names, rec.control_period_ns, self.p.frame_id))
        now = self.get_clock().now().nanoseconds  # the freshness rule once more, last thing
        if why := self.ticker.publishable(obs, now):
            self._log_drop(why, (now - obs.oldest_stamp_ns) / 1e6)
            return
        node_ms = (now - obs.stamp_ns) / 1e6
        msg.node_latency_ms = node_ms
        self.chunk_pub.publish(msg)
        if traj is not None:
            self.traj_pub.publish(traj)
        self.counters.inc("chunks")
        self.chunk_rate.tick()
        self.infer_ms.add(rec.inference_latency_ms)
        self.overhead_ms.add(node_ms - rec.inference_latency_ms)
        self.chunk_age_ms.add((now - obs.oldest_stamp_ns) / 1e6)

    def _log_drop(self, why: str, age_ms: float) -> None:
        key = f"dropped_chunks/{why}"
        if self._log_gate.should_log(key):
            self.get_logger().warning(
                f"chunk dropped, not published ({why}): its stalest input was {age_ms:.0f} ms "
                f"old at publication (max_observation_age_s {self.p.max_observation_age_s})")

    # ------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        c = self.counters.snapshot()
        infer, overhead = self.infer_ms.stats(), self.overhead_ms.stats()
        age = self.chunk_age_ms.stats()
        values = {"chunk_rate_hz": self.chunk_rate.rate(), "target_rate_hz": self.p.rate_hz,
                  "inference_ms_p50": infer["p50"], "inference_ms_p99": infer["p99"],
                  "node_overhead_ms_p50": overhead["p50"],
                  "node_overhead_ms_p99": overhead["p99"],
                  "chunk_age_ms_p50": age["p50"], "chunk_age_ms_p99": age["p99"],
                  "chunk_age_ms_max": age["max"],
                  "max_observation_age_ms": self.p.max_observation_age_s * 1e3,
                  "chunks": c.get("chunks", 0), "ticks": c.get("ticks", 0),
                  "overruns": c.get("overruns", 0), "prompt": brief(self._prompt),
                  "stamp_source": self.p.stamp_source}
        bad = {k: v for k, v in c.items()
               if k.startswith(("skipped/", "malformed/", "errors/", "dropped_chunks/"))}
        values.update(sorted(bad.items()))
        for i in range(self.num_cams):
            values[f"frames/camera{i}"] = self.asm.frames_written[i]
            values[f"dropped/camera{i}"] = max(0, self.asm.frames_written[i]
                                              - self.asm.frames_used[i])
        new_bad = sum(v - self._prev_bad.get(k, 0) for k, v in bad.items())
        self._prev_bad = bad
        recent_chunks = c.get("chunks", 0) - self._prev_chunks
        self._prev_chunks = c.get("chunks", 0)
        if recent_chunks == 0:
            level, text = messages.LEVEL_ERROR, "no chunk published in the last period"
        elif new_bad:
            level, text = messages.LEVEL_WARN, f"{new_bad} inputs refused in the last period"
        else:
            level, text = messages.LEVEL_OK, "publishing"
        self.diag_pub.publish(messages.diagnostics(
            self.get_clock().now().nanoseconds, f"{self.get_fully_qualified_name()}: policy",
            self.hardware, level, text, values))

    # ------------------------------------------------------------ shutdown
    def stop(self, timeout_s: float = 1.0) -> bool:
        """Stop the worker; True if it finished within ``timeout_s``."""
        self._stop = True
        self._trim_stop.set()
        self._wake.set()
        self._worker.join(timeout_s)
        return not self._worker.is_alive()


def main(args=None, policy_factory=load_policy) -> int:
    """Spin the node until SIGINT/SIGTERM; exit within about a second of the signal. A
    configuration error ends it at start-up with status 1 and ``fatal: <param>: <why>``
    lines (never a traceback)."""
    node = None
    code = 0
    started = False  # after rclpy.init, an error may be the stop signal arriving mid-call
    try:
        preflight(sys.argv if args is None else args)
        rclpy.init(args=args)
        started = True
        node = PolicyNode(policy_factory=policy_factory)
        executor = MultiThreadedExecutor(num_threads=max(2, node.num_cams + 2))
        executor.add_node(node)
        executor.spin()
    except STOP_SIGNALS:
        pass
    except Exception as exc:  # noqa: BLE001 - configuration errors: say why, exit non-zero
        if not (started and is_normal_stop(exc)):
            for line in fatal_lines(exc):
                print(f"[{NODE_NAME}] fatal: {line}", file=sys.stderr, flush=True)
            code = 1
    finally:
        clean = True
        if node is not None:
            clean = node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    if not clean:
        # A predict() still running cannot be interrupted; exit without waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
