"""Joint states split across messages and topics (arm + gripper drivers), over real DDS.

Publisher process (``--gripper-joints 1``: joint7 in its own JointState) -> the node with
the FakePolicy -> this process. Waits are generous; assertions are about what was (not)
published, never tight timings.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import assert_publishing_stops, node_args, write_params  # noqa: E402

from flash_rt_ros.messages import stamp_ns  # noqa: E402
from flash_rt_ros.synthetic import DEFAULT_JOINTS, joints  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"
PUB = ["-m", "flash_rt_ros.synthetic", "--cameras", "2", "--rate", "10", "--width", "32",
       "--height", "24", "--gripper-joints", "1"]
START_TIMEOUT = 30.0
ARM, GRIPPER = "/joint_states", "/gripper/joint_states"


@pytest.mark.parametrize("gripper_topic", [GRIPPER, ARM], ids=["two_topics", "one_topic"])
def test_split_joint_states_merge_by_name(procs, listener, tmp_path, gripper_topic):
    topics = sorted({ARM, gripper_topic})
    pf = write_params(tmp_path / "p.yaml", joint_state_topics=topics)
    procs.start("pub", PUB + ["--gripper-topic", gripper_topic,
                              "--extra-joints", "camera_pan", "conveyor"])
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: len(l.chunks) >= 4, START_TIMEOUT, "4 chunks")
    n = len(DEFAULT_JOINTS)
    for _, c in list(listener.chunks):
        state, st = np.asarray(c.state, np.float32), stamp_ns(c.state_stamp)
        assert state.shape == (n,) and np.isfinite(state).all()
        assert st <= stamp_ns(c.header.stamp)
        # state_stamp is the oldest joint stamp, so the arm or the gripper (whichever is
        # older) holds exactly the values the publisher derived from that stamp.
        expected = joints(st, n).astype(np.float32)
        assert (np.array_equal(state[:-1], expected[:-1]) or state[-1] == expected[-1]), \
            f"chunk {c.sequence}: no joint group matches the state stamp"
    d = listener.latest_diag()
    assert not [k for k in d if k.startswith("malformed/")], d  # extra joints are fine
    assert node.poll() is None, procs.log(node)


def test_gripper_that_stops_blocks_publishing(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", joint_state_topics=[ARM, GRIPPER],
                      max_observation_age_s=0.5)
    procs.start("pub", PUB + ["--stop-gripper-after", "6"])
    procs.start("node", [FAKE_NODE] + node_args(pf))
    assert_publishing_stops(listener, "skipped/stale_state", START_TIMEOUT)
    for _, c in listener.chunks:  # the stalest joint was within max age of every chunk
        assert stamp_ns(c.header.stamp) - stamp_ns(c.state_stamp) <= 0.5e9


def test_joint_never_published_blocks_publishing(procs, listener, tmp_path):
    """The gripper is on a topic the node does not subscribe to: joint7 is never seen."""
    pf = write_params(tmp_path / "p.yaml", joint_state_topics=[ARM])
    procs.start("pub", PUB)
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: int(l.latest_diag().get("skipped/missing_state", 0)) >= 5,
                      START_TIMEOUT, "missing_state skips")
    assert listener.chunks == []
    assert "joint7" in procs.log(node)  # the warning names the joint that never arrived
