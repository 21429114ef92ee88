"""``stamp_source``: drivers that leave header.stamp zero, over real DDS."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import node_args, write_params  # noqa: E402

from flash_rt_ros.messages import stamp_ns  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"
PUB = ["-m", "flash_rt_ros.synthetic", "--cameras", "2", "--rate", "10", "--width", "32",
       "--height", "24", "--no-stamps"]
START_TIMEOUT = 30.0


def test_unstamped_inputs_refused_with_header_stamps(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml")  # stamp_source defaults to header
    procs.start("pub", PUB)
    procs.start("node", [FAKE_NODE] + node_args(pf))
    keys = [f"malformed/{s}/zero_stamp" for s in ("camera0", "camera1", "joint_state")]
    listener.wait_for(lambda l: all(int(l.latest_diag().get(k, 0)) >= 5 for k in keys),
                      START_TIMEOUT, "zero_stamp counted for every input")
    assert listener.chunks == []


def test_receipt_time_stamps_unstamped_inputs(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", stamp_source="receipt")
    procs.start("pub", PUB)
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    # (chunks come at the camera rate, diagnostics slower: 3 chunks can precede the first)
    listener.wait_for(lambda l: len(l.chunks) >= 3 and l.latest_diag(), START_TIMEOUT,
                      "3 chunks and diagnostics")
    d = listener.latest_diag()
    assert d.get("stamp_source") == "receipt", d
    assert not [k for k in d if k.startswith("malformed/")], d
    for _, c in list(listener.chunks):
        stamps = [stamp_ns(s) for s in c.image_stamps] + [stamp_ns(c.state_stamp)]
        assert min(stamps) > 0 and stamp_ns(c.header.stamp) == max(stamps)
        assert 0 <= c.node_latency_ms < 60_000  # receipt time is on the node's own clock
    assert node.poll() is None, procs.log(node)


@pytest.mark.parametrize("value", ["frame", ""])
def test_unknown_stamp_source_refused_at_start(procs, tmp_path, value):
    pf = write_params(tmp_path / "p.yaml", stamp_source=value)
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    assert node.wait(30) == 1
    log = procs.log(node)
    assert "fatal: stamp_source: must be one of" in log and "Traceback" not in log, log
