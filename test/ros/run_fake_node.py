"""Start the real policy node process with FakePolicy (tests only).

FAKE_DELAY_S sets a deliberate inference delay. All other behaviour is the node's own.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fake_policy import FakePolicy  # noqa: E402
from flash_rt_ros.policy_node import main  # noqa: E402


def factory(params, num_views, action_dims):
    return FakePolicy(num_views, action_dims, horizon=params.horizon or 8,
                      delay_s=float(os.environ.get("FAKE_DELAY_S", "0")))


if __name__ == "__main__":
    sys.exit(main(policy_factory=factory))
