"""Start the real policy node process with FakePolicy (tests only).

FAKE_DELAY_S sets a deliberate inference delay. FAKE_CALIBRATION=needed|cached gives the
fake the FP8 frontends' calibration API (no scales yet / scales from the cache).
FAKE_CAPTURE_FAILS=1 (with FAKE_CALIBRATION) makes every predict fail as the GPU
frontends do after a failed CUDA-graph capture. FAKE_MANAGED=1 runs the managed (lifecycle) node. FAKE_LOAD_S makes the model load take
that long. The fake prints "[fake] policy
released" when the node lets go of it (cleanup). FAKE_STOP_RACE_S makes rclpy's shutdown
race deterministic: after that many seconds of spinning, the context is shut down (as the
signal handler does) and the executor then builds one more wait set on it, as it does when
the signal lands between its ``context.ok()`` check and the wait. All other behaviour is the
node's own.
"""
import os
import sys
import weakref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_policy import CalibratingFakePolicy, FakePolicy  # noqa: E402
from flash_rt_ros.policy_node import main  # noqa: E402


def factory(params, num_views, action_dims):
    if os.environ.get("FAKE_LOAD_S"):  # a slow model load
        import time
        print("[fake] loading", flush=True)
        time.sleep(float(os.environ["FAKE_LOAD_S"]))
    kwargs = dict(horizon=params.horizon or 8, delay_s=float(os.environ.get("FAKE_DELAY_S", "0")))
    calibration = os.environ.get("FAKE_CALIBRATION", "")
    if calibration:
        policy = CalibratingFakePolicy(num_views, action_dims, cached=calibration == "cached",
                                       capture_fails=bool(os.environ.get("FAKE_CAPTURE_FAILS")),
                                       **kwargs)
    else:
        policy = FakePolicy(num_views, action_dims, **kwargs)
    weakref.finalize(policy, print, "[fake] policy released", flush=True)
    return policy


def spin_into_shutdown(executor) -> None:
    import time

    import rclpy
    end = time.monotonic() + float(os.environ["FAKE_STOP_RACE_S"])
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    rclpy.shutdown()
    executor.spin_once(timeout_sec=0.05)


if __name__ == "__main__":
    if "FAKE_STOP_RACE_S" in os.environ:
        from rclpy.executors import SingleThreadedExecutor  # the node's executor
        SingleThreadedExecutor.spin = spin_into_shutdown
    kwargs = {}
    if os.environ.get("FAKE_MANAGED"):
        from flash_rt_ros.managed_node import node_class
        kwargs["node_class"] = node_class(sys.argv)  # --autostart as the real executable
    sys.exit(main(policy_factory=factory, **kwargs))
