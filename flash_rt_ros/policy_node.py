"""The ROS 2 policy node: camera frames + joint states in, action chunks out.

Threads: a single-threaded executor runs the subscriptions (one mutually exclusive callback
group per camera and one for all joint-state topics: one writer per input under any
executor) and a cheap tick; inference runs on a dedicated worker thread. rclpy's
multi-threaded executor busy-polls while a group is held and starves that thread of the
GIL (docs/ros.md, *Threads*). A tick
that finds the worker still busy is skipped and counted as an overrun rather than queued,
so a chunk is always computed from the newest observation and the subscriptions never
wait for the model (``worker.py``).

The plain node configures (loads the model, subscribes) and activates itself at start-up;
the managed one (``managed_node.py``) does the same steps on lifecycle transitions. The FP8
fast paths calibrate on the first real observations (``calibration.py``), and each chunk
is published as an ``ActionChunk`` and a stamped, optionally blended ``JointTrajectory``
(``execution.py``).

Run: ``python -m flash_rt_ros.policy_node --ros-args --params-file config/pi05_cpu.yaml``
"""
from __future__ import annotations

import copy
import os
import sys
import threading
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from diagnostic_msgs.msg import DiagnosticArray
from trajectory_msgs.msg import JointTrajectory

from flash_rt_ros import messages
from flash_rt_ros.assembly import NotReady, ObservationAssembler
from flash_rt_ros.calibration import CAPTURING, COLLECTING, Calibration, may_warm_up
from flash_rt_ros.chunks import ChunkMaker
from flash_rt_ros.execution import TrajectoryPlanner
from flash_rt_ros.frontend import hardware_name, load_policy, release_memory, warm_up
from flash_rt_ros.inputs import (InputClock, joint_sources, malformed_key, write_camera,
                                 write_joint_state)
from flash_rt_ros.malformed import MalformedFrame, brief
from flash_rt_ros.memory import start_trimming
from flash_rt_ros.params import (DEFAULTS, NODE_NAME, PARAM_NAMES, NodeParams,
                                 params_from_dict, transports, with_resolved_topics)
from flash_rt_ros.startup import fatal_lines, preflight
from flash_rt.core.errors import GraphCaptureError
from flash_rt.core.latency import LatencyTracker
from flash_rt_ros.shutdown import STOP_SIGNALS, StopSignals, busy_threads, is_normal_stop
from flash_rt_ros.stats import Counters, OncePerCause, RateMeter
from flash_rt_ros.tick import Ticker, timer_period_s
from flash_rt_ros.worker import InferenceWorker
from flash_rt_ros_msgs.msg import ActionChunk

RUNTIME_PARAMS = {"prompt"}  # every other parameter is fixed at start-up
SENSOR_CAMERA_DEPTH = 1  # frames DDS keeps per camera (qos: sensor_data) until taken
DIAG_WINDOW = 1000  # latency samples behind the diagnostics' p50/p99
# Every parameter is declared without a fixed ROS type: rclpy would refuse ``rate_hz: 10``
# (an integer for a double) with a message naming its own internals. params_from_dict
# types and bounds every value instead, with one "<param>: <why>" line per problem.
_ANY_TYPE = ParameterDescriptor(dynamic_typing=True)


class PolicyNodeLogic:
    """What the plain node (:class:`PolicyNode`) and the managed one
    (``managed_node.ManagedPolicyNode``) share, mixed into an rclpy ``Node``.

    Phases: :meth:`_setup` at construction (parameters, diagnostics, the recalibrate
    service: nothing heavy), :meth:`_configure` (load the model, warm up where that cannot
    calibrate, subscriptions, publishers, the tick, the worker), :meth:`_activate` /
    :meth:`_deactivate` (publish chunks or hold), :meth:`_cleanup` (release all of it, the
    model and its GPU memory included). The plain node runs the first three at start-up.
    """

    def _setup(self, policy_factory) -> None:
        self.p = p = self._read_params()
        self._policy_factory = policy_factory
        self.num_cams = len(p.camera_topics)
        self.num_views = p.num_views or self.num_cams
        self.joint_names = list(p.joint_names)
        self.counters = Counters()
        self.infer_ms = LatencyTracker(DIAG_WINDOW)
        self.overhead_ms = LatencyTracker(DIAG_WINDOW)  # newest input stamp -> publication
        # the node's own part: observation in hand (triggering frame / tick) -> publication
        self.own_overhead_ms = LatencyTracker(DIAG_WINDOW)
        self.input_delay_ms = LatencyTracker(DIAG_WINDOW)  # newest stamp -> in hand (transport)
        self.chunk_age_ms = LatencyTracker(DIAG_WINDOW)  # stalest input's age at publication
        self.chunk_rate = RateMeter()
        self._log_gate = OncePerCause()
        # set when the policy cannot serve again in this process (main exits with status 1)
        self.fatal_error: str | None = None
        self._prev_bad: dict = {}  # diagnostics: counts at the last report, for "new" levels
        self._prev_chunks = 0
        self._prompt = p.prompt
        self._input_clock = InputClock(p)
        self._active = False
        self.policy = self.calibration = self.asm = self.worker = None
        self.hardware, self.checkpoint_id = p.hardware, ""
        self._entities: list = []  # subscriptions, publishers, timers of the configured node
        self.chunk_pub = self.traj_pub = None
        self.add_on_set_parameters_callback(self._on_set_params)

        out_qos = self._out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                             history=HistoryPolicy.KEEP_LAST)
        # Diagnostics and the recalibrate service exist in every state: a held node says why.
        self.diag_pub = self.create_publisher(DiagnosticArray, p.diagnostics_topic, out_qos)
        self._control = MutuallyExclusiveCallbackGroup()
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics,
                          callback_group=self._control)
        self.create_service(Trigger, "~/recalibrate", self._on_recalibrate,
                            callback_group=MutuallyExclusiveCallbackGroup())

    def _configure(self) -> None:
        """Load the model and start taking inputs (chunks are published once active)."""
        p = self.p
        self.policy = self._policy_factory(p, self.num_views, len(self.joint_names))
        self.hardware = hardware_name(self.policy, p.hardware)
        self.checkpoint_id = str(getattr(self.policy, "checkpoint_id", "") or "")
        self.calibration = Calibration(self.policy, p.calibration_frames)
        if may_warm_up(self.policy):
            warm_up(self.policy, self.num_views, len(self.joint_names), p.prompt, p.seed)
        else:
            self.get_logger().info(
                f"no warm-up on blank frames: the FP8 scales are calibrated on the first "
                f"{p.calibration_frames} real observations (nothing is published before)")
        self.asm = ObservationAssembler.for_params(p)
        if p.jpeg_decoder != "cpu":
            self.get_logger().info(f"JPEG frames decoded on the {self.asm.jpeg.name} "
                                   f"(jpeg_decoder: {p.jpeg_decoder})")
        self.ticker = Ticker(self.asm, p, self.counters, on_skip=self._log_skip)
        self.maker = ChunkMaker(self.policy, p, self.num_views, self.hardware,
                                self.checkpoint_id)
        self.planner = TrajectoryPlanner(p.trajectory_stamp, p.blend_steps)

        out_qos = self._out_qos
        self.chunk_pub = self.create_publisher(ActionChunk, p.action_chunk_topic, out_qos)
        self.traj_pub = (self.create_publisher(JointTrajectory, p.trajectory_topic, out_qos)
                         if p.trajectory_topic else None)
        ents = [self.chunk_pub] + ([self.traj_pub] if self.traj_pub else [])

        in_qos = qos_profile_sensor_data if p.qos == "sensor_data" else out_qos
        cam_qos = in_qos
        if p.qos == "sensor_data":
            # Only a camera's newest frame is ever used: a deeper queue makes a node that
            # fell behind decode older frames first (staler inputs, more CPU, more buffers
            # held). Joint states keep the depth (an arm and a gripper may share a topic),
            # and "reliable" keeps it for every input: each message is handled, in order.
            cam_qos = copy.copy(in_qos)
            cam_qos.depth = SENSOR_CAMERA_DEPTH
        for i, (topic, kind) in enumerate(zip(p.camera_topics, transports(p))):
            msg_type = CompressedImage if kind == "compressed" else Image
            ents.append(self.create_subscription(
                msg_type, topic, self._camera_cb(i, kind), cam_qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
        if p.state_source != "none":
            joints_group = MutuallyExclusiveCallbackGroup()  # one writer for the state vector
            for topic, source in zip(p.joint_state_topics, joint_sources(p)):
                ents.append(self.create_subscription(
                    JointState, topic, self._joint_state_cb(source), in_qos,
                    callback_group=joints_group))
        if p.prompt_topic:
            ents.append(self.create_subscription(
                String, p.prompt_topic, self._on_prompt, out_qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
        if p.trigger == "timer":
            ents.append(self.create_timer(timer_period_s(p.rate_hz), self._tick,
                                          callback_group=self._control))
        self._entities = ents
        self.worker = InferenceWorker(self._infer_and_publish, self._release)
        self._trim_stop = threading.Event()
        start_trimming(self._trim_stop)
        self.get_logger().info(
            f"ready: model={p.model} hardware={self.hardware} cameras={self.num_cams} "
            f"views={self.num_views} joints={len(self.joint_names)} trigger={p.trigger} "
            f"rate={p.rate_hz} Hz max_age={p.max_observation_age_s} s "
            f"stamps={p.stamp_source} seeds={p.seed_mode} "
            f"calibration={self.calibration.state} ({self.calibration.source}) "
            f"checkpoint={self.checkpoint_id or '-'}")

    def _activate(self) -> None:
        self.planner.forget()  # the arm may have moved while held: no blend across that
        self._active = True
        self.get_logger().info("active: publishing chunks")

    def _deactivate(self) -> None:
        self._active = False
        self.get_logger().info("inactive: holding, no chunks are published")

    def _cleanup(self) -> None:
        """Undo :meth:`_configure`: stop the worker, drop inputs and outputs, release the
        model (and the GPU memory it held)."""
        self._active = False
        if self.worker is not None:
            self.worker.stop()
            self._trim_stop.set()
        for ent in self._entities:
            if isinstance(ent, Subscription):
                self.destroy_subscription(ent)
            elif isinstance(ent, Publisher):
                self.destroy_publisher(ent)
            elif isinstance(ent, Timer):
                self.destroy_timer(ent)
        self._entities = []
        self.chunk_pub = self.traj_pub = None
        self.worker = self.asm = self.ticker = self.maker = self.planner = None
        self.policy = self.calibration = None
        release_memory()

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
        return with_resolved_topics(params_from_dict(values), self.resolve_topic_name)

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
            received_ns = self.get_clock().now().nanoseconds if trigger else 0
            try:
                write(msg)
            except Exception as exc:  # noqa: BLE001 - a bad message must never stop the node
                self._malformed(source, exc)
                return
            if trigger:
                self._tick(received_ns)

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
    def _tick(self, received_ns: int = 0) -> None:
        """Take an observation now; ``received_ns``: when the triggering frame arrived
        (camera trigger), else the tick itself is when the node had the observation."""
        worker = self.worker
        if worker is None or not (self._active or self._preparing()):
            return  # held: no observation is taken (calibration and capture excepted)
        now = self.get_clock().now().nanoseconds
        obs = self.ticker.tick(now, busy=worker.busy)
        if obs is None:
            return
        obs.received_ns = received_ns or now
        worker.submit((obs, self._prompt))
        # Hand the GIL to the inference thread now: otherwise it waits for the executor's
        # next blocking wait, ~0.3 ms of rclpy Python later (p99 over 1 ms). Measured in
        # docs/performance.md (node overhead): the node's own work 0.84 -> 0.45 ms p50.
        time.sleep(0)

    def _preparing(self) -> bool:
        """Calibration or graph capture still wants observations (in any state)."""
        cal = self.calibration
        return cal is not None and cal.state in (COLLECTING, CAPTURING)

    def _log_skip(self, key: str, exc: NotReady) -> None:
        if self._log_gate.should_log(key):
            self.get_logger().warning(f"no chunk: {exc}")

    def _release(self, job) -> None:
        asm = self.asm  # None once cleaned up: the slots went with it
        if asm is not None:
            asm.release(job[0])

    def _infer_and_publish(self, job) -> None:
        try:
            self._serve(*job)
        except GraphCaptureError as exc:  # the frontend can never capture again: restart
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - log, count, keep serving
            if self.worker.stopping or is_normal_stop(exc, self.context):
                # SIGINT shut the context down while this chunk was computed: it has
                # nowhere to go, and that is a normal stop, not an inference failure
                return
            key = f"errors/inference_{type(exc).__name__}"
            self.counters.inc(key)
            if self._log_gate.should_log(key):
                self.get_logger().error(f"inference failed: {exc!r}")

    def _fail(self, why: str) -> None:
        """End the process with status 1 (main): nothing is published any more, and a
        supervisor (launch's on_exit shutdown, a systemd unit) sees the node die instead of
        one that runs on without ever publishing."""
        self.fatal_error = why
        self.counters.inc("errors/fatal")
        self.get_logger().error(f"cannot go on, stopping: {why}")
        self.context.try_shutdown()

    def _serve(self, obs, prompt: str) -> None:
        """One observation: calibration, capture, or a published chunk."""
        cal = self.calibration
        cal.start_requested()
        if cal.collecting:
            had_scales = cal.has_scales  # recalibrating: chunks go on with the old scales
            if cal.add(self.maker.inputs(obs, prompt), obs.stamp_ns):
                report = cal.run()
                self.get_logger().info(
                    f"calibrated the FP8 scales on {self.p.calibration_frames} observations "
                    f"(newest stamp {cal.newest_stamp_ns} ns): {report}")
            if not had_scales:
                return  # nothing is published from, or before, the first calibration
        elif cal.state == CAPTURING:
            self.policy.predict(**self.maker.inputs(obs, prompt))  # not published: late
            cal.captured()
            return
        if not self._active:
            return
        rec = self.maker.make(obs, prompt)
        now = self.get_clock().now().nanoseconds  # the freshness rule once more, last thing
        if why := self.ticker.publishable(obs, now):
            self._log_drop(why, (now - obs.oldest_stamp_ns) / 1e6)
            return
        if not self._active:  # deactivated during predict
            self.counters.inc("dropped_chunks/inactive")
            return
        msg = messages.action_chunk(rec)
        node_ms = (now - obs.stamp_ns) / 1e6
        msg.node_latency_ms = node_ms
        self.chunk_pub.publish(msg)
        if self.traj_pub is not None:
            traj = self.planner.plan(rec.actions, rec.control_period_ns, obs.stamp_ns, now)
            self.traj_pub.publish(messages.joint_trajectory(traj, self.joint_names,
                                                            self.p.frame_id))
        self.counters.inc("chunks")
        self.chunk_rate.tick()
        self.infer_ms.add(rec.inference_latency_ms)
        self.overhead_ms.add(node_ms - rec.inference_latency_ms)
        self.own_overhead_ms.add((now - obs.received_ns) / 1e6 - rec.inference_latency_ms)
        self.input_delay_ms.add((obs.received_ns - obs.stamp_ns) / 1e6)
        self.chunk_age_ms.add((now - obs.oldest_stamp_ns) / 1e6)

    def _log_drop(self, why: str, age_ms: float) -> None:
        key = f"dropped_chunks/{why}"
        if self._log_gate.should_log(key):
            self.get_logger().warning(
                f"chunk dropped, not published ({why}): its stalest input was {age_ms:.0f} ms "
                f"old at publication (max_observation_age_s {self.p.max_observation_age_s})")

    def _on_recalibrate(self, request, response):
        cal = self.calibration
        if cal is None:
            response.success, response.message = False, "not configured: no model loaded"
        else:
            response.success, response.message = cal.request()
        self.get_logger().info(f"recalibrate requested: {response.message}")
        return response

    # ------------------------------------------------------------ diagnostics
    def _held(self) -> str:
        """Why no chunk can be published now, by design ("" when serving)."""
        if self.policy is None:
            return "unconfigured: no model loaded"
        if not self._active:
            return "inactive: holding, no chunks are published"
        cal = self.calibration
        if not cal.has_scales:
            return f"calibrating: {cal.values()['calibration_frames']} observations"
        return ""

    def _publish_diagnostics(self) -> None:
        c = self.counters.snapshot()
        age = self.chunk_age_ms.stats()
        values = {"state": "active" if self._active else
                  ("inactive" if self.policy is not None else "unconfigured"),
                  "chunk_rate_hz": self.chunk_rate.rate(), "target_rate_hz": self.p.rate_hz,
                  **_pcts("inference_ms", self.infer_ms),
                  **_pcts("node_overhead_ms", self.overhead_ms),
                  **_pcts("own_overhead_ms", self.own_overhead_ms),
                  **_pcts("input_delay_ms", self.input_delay_ms),
                  "chunk_age_ms_p50": age["p50"], "chunk_age_ms_p99": age["p99"],
                  "chunk_age_ms_max": age["max"],
                  "max_observation_age_ms": self.p.max_observation_age_s * 1e3,
                  "chunks": c.get("chunks", 0), "ticks": c.get("ticks", 0),
                  "overruns": c.get("overruns", 0), "prompt": brief(self._prompt),
                  "stamp_source": self.p.stamp_source,
                  "trajectory_stamp": self.p.trajectory_stamp,
                  "blend_steps": self.p.blend_steps}
        if self.calibration is not None:
            values.update(self.calibration.values())
        bad = {k: v for k, v in c.items()
               if k.startswith(("skipped/", "malformed/", "errors/", "dropped_chunks/"))}
        values.update(sorted(bad.items()))
        if self.asm is not None:
            for i in range(self.num_cams):
                values[f"frames/camera{i}"] = self.asm.frames_written[i]
                values[f"dropped/camera{i}"] = max(0, self.asm.frames_written[i]
                                                  - self.asm.frames_used[i])
        new_bad = sum(v - self._prev_bad.get(k, 0) for k, v in bad.items())
        self._prev_bad = bad
        recent_chunks = c.get("chunks", 0) - self._prev_chunks
        self._prev_chunks = c.get("chunks", 0)
        if held := self._held():
            level, text = messages.LEVEL_WARN, held
        elif recent_chunks == 0:
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
        self._active = False
        if self.worker is None:
            return True
        self._trim_stop.set()
        return self.worker.stop(timeout_s)


class PolicyNode(PolicyNodeLogic, Node):
    """The plain node: configured and active from start-up until the process stops."""

    def __init__(self, policy_factory=load_policy, **kwargs):
        Node.__init__(self, NODE_NAME, **kwargs)
        self._setup(policy_factory)
        self._configure()
        self._activate()


def main(args=None, policy_factory=load_policy, node_class=PolicyNode) -> int:
    """Spin the node until SIGINT/SIGTERM; exit 0 within about a second of the signal,
    however many signals arrive. A configuration error ends it at start-up with status 1
    and ``fatal: <param>: <why>`` lines (never a traceback)."""
    signals = StopSignals().install()
    node = executor = None
    code = 0
    started = False  # after rclpy.init, an error may be the stop signal arriving mid-call
    try:
        preflight(sys.argv if args is None else args)
        rclpy.init(args=args)
        started = True
        node = node_class(policy_factory=policy_factory)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        signals.serving()
        executor.spin()
    except STOP_SIGNALS:
        pass
    except Exception as exc:  # noqa: BLE001 - configuration errors: say why, exit non-zero
        if not (started and is_normal_stop(exc)):
            for line in fatal_lines(exc):
                print(f"[{NODE_NAME}] fatal: {line}", file=sys.stderr, flush=True)
            code = 1
    finally:
        signals.serving()  # a signal during the clean-up must not interrupt it
        clean = True
        if node is not None and getattr(node, "fatal_error", None):
            print(f"[{NODE_NAME}] fatal: {node.fatal_error}", file=sys.stderr, flush=True)
            code = 1
        if node is not None:
            clean = node.stop()
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=0.5)
        rclpy.try_shutdown()
        signals.ignore()
    if not clean or _still_busy():
        # A predict() or a model load still running cannot be interrupted; exit without
        # waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _pcts(name: str, tracker: LatencyTracker) -> dict:
    """``{name}_p50`` and ``{name}_p99`` of a latency window, as the diagnostics show them."""
    stats = tracker.stats()
    return {f"{name}_p50": stats["p50"], f"{name}_p99": stats["p99"]}


def _still_busy(grace_s: float = 0.5) -> bool:
    """Non-daemon threads still running after ``grace_s`` (idle executor threads end at
    once after the executor's shutdown; one inside a model call does not)."""
    end = time.monotonic() + grace_s
    while busy_threads() and time.monotonic() < end:
        time.sleep(0.02)
    return bool(busy_threads())


if __name__ == "__main__":
    sys.exit(main())
