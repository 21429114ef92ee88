"""Process and DDS helpers for the ROS tests.

Every test gets its own ROS_DOMAIN_ID, held exclusively on this host for the test's
duration (a lock file per id), and discovery limited to localhost, so earlier tests and
other test runs on the same machine cannot cross-talk. Child
processes start in their own session and are stopped with SIGINT to the process group
(then SIGKILL as a last resort, which the test reports as a failure).
"""
from __future__ import annotations

import ctypes
import fcntl
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import CHUNK_TOPIC

REPO = Path(__file__).resolve().parents[2]
_DOMAINS = itertools.count()
_DOMAIN_IDS = range(10, 200)  # Fast DDS derives ports from the id; they stay valid to 232


def ros_child_env(domain: int, **extra) -> dict:
    env = dict(os.environ)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    env["RMW_IMPLEMENTATION"] = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), site, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _die_with_parent() -> None:
    """Children get SIGTERM if pytest itself is killed (e.g. by a CI timeout)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Procs:
    """Child processes of one test, each in its own process group, logs in tmp_path."""

    def __init__(self, tmp_path: Path, domain: int):
        self.tmp, self.domain, self.items = tmp_path, domain, []

    def start(self, name: str, args: list[str], **env) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=_die_with_parent,
                             env=ros_child_env(self.domain, **env))
        p.log_path, p.name = self.tmp / f"{name}.log", name
        self.items.append(p)
        return p

    def log(self, p) -> str:
        return Path(p.log_path).read_text(errors="replace")

    def stop(self, p, sig=signal.SIGINT, timeout=5.0) -> float:
        """Signal the group; return seconds until the process exited."""
        t0 = time.monotonic()
        if p.poll() is None:
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
            raise AssertionError(f"{p.name} ignored {sig.name} for {timeout} s:\n{self.log(p)}")
        return time.monotonic() - t0

    def stop_all(self) -> None:
        for p in reversed(self.items):
            if p.poll() is None:
                try:
                    self.stop(p)
                except AssertionError:
                    pass


@pytest.fixture
def domain():
    """A ROS_DOMAIN_ID no other test on this host holds meanwhile (an exclusive, non-blocking
    flock on /tmp/flash_rt_ros_domain_<id>.lock, released when the test ends)."""
    start = os.getpid() * 7 + next(_DOMAINS)
    for k in range(len(_DOMAIN_IDS)):
        d = _DOMAIN_IDS[(start + k) % len(_DOMAIN_IDS)]
        lock = open(f"/tmp/flash_rt_ros_domain_{d}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        with lock:
            yield d
        return
    raise RuntimeError(f"every ROS_DOMAIN_ID in {_DOMAIN_IDS} is held by another test")


@pytest.fixture
def procs(tmp_path, domain):
    ps = Procs(tmp_path, domain)
    yield ps
    ps.stop_all()


class Listener:
    """An in-test rclpy node (own context) recording chunks and diagnostics."""

    def __init__(self, domain: int, chunk_topic=CHUNK_TOPIC,
                 name: str = "test_listener"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory
        from flash_rt_ros_msgs.msg import ActionChunk

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.chunks, self.diags, self.trajs = [], [], []
        self.lock = threading.RLock()
        self.chunk_sub = self.node.create_subscription(ActionChunk, chunk_topic,
                                                       self._add(self.chunks), 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._add(self.diags), 50)
        self.node.create_subscription(JointTrajectory, "/flash_rt_policy/joint_trajectory",
                                      self._add(self.trajs), 50)
        self.prompt_pub = self.node.create_publisher(String, "/flash_rt_policy/prompt", 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _add(self, dest):
        def cb(msg):
            with self.lock:
                dest.append((time.monotonic(), msg))
        return cb

    def _spin(self):
        from rclpy.executors import ExternalShutdownException
        try:
            while self.ctx.ok():
                self.executor.spin_once(timeout_sec=0.1)
        except (ExternalShutdownException, Exception):
            pass

    def wait_for(self, pred, timeout: float, what: str = "condition"):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                r = pred(self)
            if r:
                return r
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def wait_matched(self, timeout: float) -> None:
        """Until the node's chunk publisher is matched: chunks published before that are
        lost to this listener (reliable, volatile), which a test counting from the first
        chunk must rule out."""
        self.wait_for(lambda l: l.chunk_sub.get_publisher_count() >= 1, timeout,
                      "the chunk publisher to match")

    def latest_diag(self) -> dict:
        with self.lock:
            if not self.diags:
                return {}
            status = self.diags[-1][1].status[0]
        return {kv.key: kv.value for kv in status.values} | {"_level": status.level[0],
                                                             "_message": status.message}

    def close(self):
        import rclpy
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        self.thread.join(2)


@pytest.fixture
def listener(domain):
    lst = Listener(domain)
    yield lst
    lst.close()


# The rosbag tools' session fixtures (episode bag, reference chunks, perturbed checkpoint).
from bag_fixtures import episode, perturbed_ckpt, reference  # noqa: E402,F401
