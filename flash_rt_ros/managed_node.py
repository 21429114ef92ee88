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
one is a ``fatal:`` line and exit 1). Launch files start this node with ``managed:=true``
and activate it unless ``autostart:=false``.

Run: ``python -m flash_rt_ros.managed_node --ros-args --params-file config/pi05_cpu.yaml``
"""
from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from flash_rt_ros.frontend import load_policy
from flash_rt_ros.params import NODE_NAME
from flash_rt_ros.policy_node import PolicyNodeLogic, main as run_node
from flash_rt_ros.startup import fatal_lines


class ManagedPolicyNode(PolicyNodeLogic, LifecycleNode):
    """The policy node with lifecycle transitions."""

    def __init__(self, policy_factory=load_policy, **kwargs):
        LifecycleNode.__init__(self, NODE_NAME, **kwargs)
        self._setup(policy_factory)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - a failed load is a failed transition
            for line in fatal_lines(exc):
                self.get_logger().error(f"configure failed: {line}")
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


def main(args=None, policy_factory=load_policy) -> int:
    return run_node(args, policy_factory=policy_factory, node_class=ManagedPolicyNode)


if __name__ == "__main__":
    sys.exit(main())
