"""Start the real policy node process with FakePolicy (tests only).

FAKE_DELAY_S sets a deliberate inference delay. FAKE_STOP_RACE_S makes rclpy's shutdown
race deterministic: after that many seconds of spinning, the context is shut down (as the
signal handler does) and the executor then builds one more wait set on it, as it does when
the signal lands between its ``context.ok()`` check and the wait. All other behaviour is the
node's own.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_policy import FakePolicy  # noqa: E402
from flash_rt_ros.policy_node import main  # noqa: E402


def factory(params, num_views, action_dims):
    return FakePolicy(num_views, action_dims, horizon=params.horizon or 8,
                      delay_s=float(os.environ.get("FAKE_DELAY_S", "0")))


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
        from rclpy.executors import MultiThreadedExecutor
        MultiThreadedExecutor.spin = spin_into_shutdown
    sys.exit(main(policy_factory=factory))
