"""Start-up refusals: one clear line and exit status 1, never a traceback."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import node_args, write_params  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"


def test_unregistered_hardware_lists_the_valid_combinations(procs):
    """config/pi05_thor.yaml asks for hardware the engine may not have a frontend for."""
    from flash_rt.hardware import registered

    if ("pi05", "torch", "thor") in registered():
        import pytest
        pytest.skip("a thor frontend is registered now; nothing to refuse")
    node = procs.start("node", ["-m", "flash_rt_ros.policy_node"] + node_args(
        "config/pi05_thor.yaml", "-p", "checkpoint_dir:=/nonexistent"))
    assert node.wait(60) == 1
    log = procs.log(node)
    assert "fatal: no frontend for model='pi05' framework='torch' hardware='thor'" in log, log
    assert "registered combinations: ('pi0', 'torch', 'cpu'), ('pi05', 'torch', 'cpu')" in log
    assert "Traceback" not in log, log


def test_renamed_joint_state_topic_is_refused(procs, tmp_path):
    pf = write_params(tmp_path / "p.yaml", joint_state_topic="/arm/joint_states")
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    assert node.wait(30) == 1
    log = procs.log(node)
    assert "joint_state_topic is now joint_state_topics" in log and "Traceback" not in log, log
