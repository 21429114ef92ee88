"""The managed (lifecycle) node over real DDS, driven through its lifecycle services from
rclpy (no ros2cli): configure loads and subscribes but publishes nothing, activate
publishes, deactivate holds (diagnostics say why), cleanup releases the model, and the
node can be configured again."""
from __future__ import annotations

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from helpers import node_args, write_params  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"
PUB = ["-m", "flash_rt_ros.synthetic", "--cameras", "2", "--rate", "10", "--width", "32",
       "--height", "24"]


class Lifecycle:
    """Sync calls to /flash_rt_policy/{change_state,get_state} from the listener's node
    (spun by the listener's own thread)."""

    def __init__(self, node):
        from lifecycle_msgs.srv import ChangeState, GetState

        self._change = node.create_client(ChangeState, "/flash_rt_policy/change_state")
        self._get = node.create_client(GetState, "/flash_rt_policy/get_state")
        self.ChangeState, self.GetState = ChangeState, GetState
        assert self._change.wait_for_service(30.0) and self._get.wait_for_service(30.0)

    @staticmethod
    def _call(client, request, timeout=30.0):
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.05)
        assert future.done(), f"{client.srv_name} did not answer"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        req = self.ChangeState.Request()
        req.transition.id = transition_id
        return self._call(self._change, req).success

    def state(self) -> str:
        return self._call(self._get, self.GetState.Request()).current_state.label


def _quiet(listener, seconds: float) -> None:
    """No chunk arrives for ``seconds``."""
    with listener.lock:
        n = len(listener.chunks)
    time.sleep(seconds)
    assert len(listener.chunks) == n, "chunks published while not active"


def _diag_says(listener, text: str, timeout=10.0):
    listener.wait_for(lambda l: text in l.latest_diag().get("_message", ""), timeout,
                      f"diagnostics saying {text!r}")


def test_managed_node_transitions(procs, listener, tmp_path):
    from lifecycle_msgs.msg import Transition

    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0)
    procs.start("pub", PUB)
    node = procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_MANAGED=1)
    lc = Lifecycle(listener.node)
    assert lc.state() == "unconfigured"
    _diag_says(listener, "unconfigured: no model loaded")
    assert "ready:" not in procs.log(node), "the model loads on configure, not at start-up"

    assert lc.transition(Transition.TRANSITION_CONFIGURE)
    assert lc.state() == "inactive" and "ready:" in procs.log(node)
    _diag_says(listener, "inactive: holding")
    listener.wait_for(lambda l: int(l.latest_diag().get("frames/camera0", 0)) > 5, 10,
                      "frames taken while inactive")
    _quiet(listener, 1.5)

    assert lc.transition(Transition.TRANSITION_ACTIVATE) and lc.state() == "active"
    listener.wait_for(lambda l: len(l.chunks) >= 3, 20, "chunks once active")

    assert lc.transition(Transition.TRANSITION_DEACTIVATE) and lc.state() == "inactive"
    time.sleep(0.5)  # a chunk already on the wire may still arrive
    _quiet(listener, 1.5)
    _diag_says(listener, "inactive: holding")

    assert lc.transition(Transition.TRANSITION_ACTIVATE)
    with listener.lock:
        n = len(listener.chunks)
    listener.wait_for(lambda l: len(l.chunks) >= n + 2, 20, "chunks after re-activation")

    assert lc.transition(Transition.TRANSITION_DEACTIVATE)
    assert lc.transition(Transition.TRANSITION_CLEANUP) and lc.state() == "unconfigured"
    end = time.monotonic() + 10
    while "[fake] policy released" not in procs.log(node) and time.monotonic() < end:
        time.sleep(0.1)
    assert "[fake] policy released" in procs.log(node), "cleanup kept the model"
    _diag_says(listener, "unconfigured: no model loaded")

    assert lc.transition(Transition.TRANSITION_CONFIGURE), "configure again after cleanup"
    assert lc.transition(Transition.TRANSITION_ACTIVATE)
    with listener.lock:
        n = len(listener.chunks)
    listener.wait_for(lambda l: len(l.chunks) >= n + 2, 20, "chunks after a second configure")
    assert lc.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert lc.state() == "finalized"

    took = procs.stop(node, signal.SIGINT)
    log = procs.log(node)
    assert node.returncode == 0 and took < 2.0 and "Traceback" not in log, log


def test_failed_configure_stays_unconfigured(procs, listener, tmp_path):
    """A model that cannot load fails the transition with its reason; the process stays."""
    pf = write_params(tmp_path / "p.yaml")
    node = procs.start("node", ["-m", "flash_rt_ros.managed_node"] + node_args(
        pf, "-p", "checkpoint_dir:=/nonexistent", "-p", "hardware:=cpu"))
    lc = Lifecycle(listener.node)
    assert not lc.transition(__import__("lifecycle_msgs.msg").msg.Transition.TRANSITION_CONFIGURE)
    assert lc.state() == "unconfigured" and node.poll() is None
    log = procs.log(node)
    assert "configure failed:" in log and "/nonexistent" in log and "Traceback" not in log, log


def test_autostart_configures_and_activates(procs, listener, tmp_path):
    """What the launch files start with managed:=true (autostart:=true by default)."""
    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0)
    procs.start("pub", PUB)
    procs.start("node", [FAKE_NODE, "--autostart"] + node_args(pf), FAKE_MANAGED=1)
    listener.wait_for(lambda l: len(l.chunks) >= 2, 30, "chunks without any transition call")
    assert Lifecycle(listener.node).state() == "active"


def test_autostart_configure_failure_is_fatal(procs, tmp_path):
    pf = write_params(tmp_path / "p.yaml")
    node = procs.start("node", ["-m", "flash_rt_ros.managed_node", "--autostart"] + node_args(
        pf, "-p", "checkpoint_dir:=/nonexistent", "-p", "hardware:=cpu"))
    assert node.wait(60) == 1
    log = procs.log(node)
    assert "fatal:" in log and "/nonexistent" in log and "Traceback" not in log, log
