"""The policy node as a managed (lifecycle) node: the same node, driven by transitions.

    unconfigured --configure--> inactive --activate--> active
                 <--cleanup---           <--deactivate--

- ``configure``: load the model, warm up (never on blank frames for an FP8 path without
  scales), subscribe, start the tick. Calibration from the first real observations (or
  the graph capture after cached scales) then runs as soon as frames arrive, already in
  ``inactive``, so activating costs nothing. A load that fails returns FAILURE with the
  reason logged; the node stays unconfigured and can be configured again.
- ``activate``: chunks are published. ``deactivate``: held, nothing is published, the
  diagnostics say so (``inactive: holding``); inputs are still taken.
- ``cleanup`` / ``shutdown``: the model is released (GPU memory included), subscriptions
  and publishers are destroyed.

Parameters are read and validated when the process starts, as for the plain node (a bad
one is a ``fatal:`` line and exit 1). With ``--autostart`` (before ``--ros-args``) the node
configures and activates itself once started, and a configure that fails ends it with the
``fatal:`` lines and status 1, like the plain node; the lifecycle services stay available
to deactivate, clean up and configure it again. Launch files start this node with
``managed:=true`` and pass ``--autostart`` unless ``autostart:=false``. (launch_ros'
``LifecycleNode`` action could send the transitions instead, but its ROS adapter in the
launch process fails on a terminal's Ctrl-C: "Cannot shutdown a ROS adapter that is not
running", and ``ros2 launch`` then exits 1 after a clean stop; seen with launch_ros 0.28.0.)

Run: ``python -m flash_rt_ros.managed_node --ros-args --params-file config/pi05_cpu.yaml``
"""
from __future__ import annotations

import functools
import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from flash_rt_ros.frontend import load_policy
from flash_rt_ros.launch_description import AUTOSTART
from flash_rt_ros.params import NODE_NAME
from flash_rt_ros.policy_node import PolicyNodeLogic, main as run_node
from flash_rt_ros.startup import fatal_lines


class ManagedPolicyNode(PolicyNodeLogic, LifecycleNode):
    """The policy node with lifecycle transitions."""

    def __init__(self, policy_factory=load_policy, autostart=False, **kwargs):
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._setup(policy_factory)
        self._configure_error = None
        if autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise self._configure_error
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._configure_error = None
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - a failed load is a failed transition
            for line in fatal_lines(exc):
                self.get_logger().error(f"configure failed: {line}")
            self._configure_error = exc
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS


def node_class(argv) -> type:
    """ManagedPolicyNode, configuring and activating itself when ``argv`` (the process's
    arguments before ``--ros-args``) holds ``--autostart``."""
    plain = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if AUTOSTART in plain:
        return functools.partial(ManagedPolicyNode, autostart=True)
    return ManagedPolicyNode


def main(args=None, policy_factory=load_policy) -> int:
    argv = sys.argv if args is None else args
    return run_node(args, policy_factory=policy_factory, node_class=node_class(argv))


if __name__ == "__main__":
    sys.exit(main())
