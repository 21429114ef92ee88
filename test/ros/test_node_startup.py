"""Start-up refusals: one clear line and exit status 1, never a traceback."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from helpers import node_args, write_params  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"


def test_unregistered_hardware_lists_the_valid_combinations(procs, tmp_path):
    """A hardware name without a frontend is refused with the registered combinations."""
    pf = write_params(tmp_path / "p.yaml", hardware="tpu")
    node = procs.start("node", ["-m", "flash_rt_ros.policy_node"] + node_args(
        pf, "-p", "checkpoint_dir:=/nonexistent"))
    assert node.wait(60) == 1
    log = procs.log(node)
    assert "fatal: no frontend for model='pi05' framework='torch' hardware='tpu'" in log, log
    assert "('pi05', 'torch', 'thor')" in log and "('pi05', 'torch', 'cpu')" in log, log
    assert "Traceback" not in log, log


def test_gpu_config_without_a_gpu_fails_with_one_line(procs, tiny_pi05_ckpt):
    """config/pi05_thor.yaml on a machine without CUDA: the GPU frontend says so."""
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the thor frontend would start")
    node = procs.start("node", ["-m", "flash_rt_ros.policy_node"] + node_args(
        "config/pi05_thor.yaml", "-p", f"checkpoint_dir:={tiny_pi05_ckpt}"))
    assert node.wait(60) == 1
    log = procs.log(node)
    assert "the thor frontend needs a CUDA GPU" in log and "Traceback" not in log, log


def test_renamed_joint_state_topic_is_refused(procs, tmp_path):
    pf = write_params(tmp_path / "p.yaml", joint_state_topic="/arm/joint_states")
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    assert node.wait(30) == 1
    log = procs.log(node)
    assert "joint_state_topic is now joint_state_topics" in log and "Traceback" not in log, log
