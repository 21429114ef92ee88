"""Calibration in the node: never on blank frames, on the first real observations before
anything is published, or from the cache; recalibration on request; its state in the
diagnostics. The cpu frontend has no calibration, so the node's side runs here with the
fake's copy of the GPU frontends' API (test_calibration_api.py checks that API against the
real GPU frontend class)."""
from __future__ import annotations

import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import node_args, write_params  # noqa: E402
from test_node_dds import _result  # noqa: E402

from flash_rt_ros.messages import stamp_ns

FAKE_NODE = "test/ros/run_fake_node.py"
PUB = ["-m", "flash_rt_ros.synthetic", "--cameras", "2", "--rate", "10", "--width", "32",
       "--height", "24"]
START_TIMEOUT = 30.0


def _recalibrate(listener):
    from std_srvs.srv import Trigger

    client = listener.node.create_client(Trigger, "/flash_rt_policy/recalibrate")
    assert client.wait_for_service(10.0)
    return _result(client.call_async(Trigger.Request()))


def _log_when(procs, node, pattern, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if m := re.search(pattern, procs.log(node)):
            return m
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in the node's log:\n{procs.log(node)}")


def test_first_observations_calibrate_before_anything_is_published(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0, calibration_frames=3)
    node = procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_CALIBRATION="needed")
    listener.wait_matched(START_TIMEOUT)  # no chunk can exist before the cameras start
    procs.start("pub", PUB)
    listener.wait_for(lambda l: len(l.chunks) >= 3, START_TIMEOUT, "3 chunks")
    log = procs.log(node)
    assert "calibrated on its own inputs" not in log, "a predict calibrated (warm-up?)"
    assert "[fake] predict (image mean 0.0)" not in log, "a warm-up on blank frames ran"
    fake = re.search(r"\[fake\] recalibrate #1: 3 frames, image means (\d+\.\d)", log)
    assert fake and float(fake[1]) > 0, log  # real frames, not black ones
    newest = int(re.search(r"calibrated the FP8 scales on 3 observations \(newest stamp "
                           r"(\d+) ns\)", log)[1])
    with listener.lock:
        chunks = [m for _, m in listener.chunks]
    assert all(stamp_ns(c.header.stamp) > newest for c in chunks), \
        "a chunk was published from an observation before the calibration was done"
    assert chunks[0].sequence == 0
    d = listener.wait_for(lambda l: l.latest_diag().get("calibrations") == "1" and
                          l.latest_diag(), 10, "diagnostics after calibration")
    assert (d["calibration_state"], d["calibration_source"]) == ("calibrated", "observations")

    res = _recalibrate(listener)
    assert res.success and "next 3 observations" in res.message, res.message
    with listener.lock:
        n = len(listener.chunks)
    _log_when(procs, node, r"\[fake\] recalibrate #2: 3 frames")
    listener.wait_for(lambda l: l.latest_diag().get("calibrations") == "2", 10,
                      "the second calibration in the diagnostics")
    listener.wait_for(lambda l: len(l.chunks) >= n + 3, 10, "chunks during and after it")
    assert "calibrated on its own inputs" not in procs.log(node)


def test_cached_scales_warm_up_and_capture_without_calibrating(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0)
    procs.start("pub", PUB)
    node = procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_CALIBRATION="cached")
    listener.wait_for(lambda l: len(l.chunks) >= 2, START_TIMEOUT, "2 chunks")
    d = listener.wait_for(lambda l: l.latest_diag().get("calibration_state") == "calibrated"
                          and l.latest_diag(), 10, "diagnostics")
    assert d["calibration_source"] == "cache" and d["calibrations"] == "0", d
    log = procs.log(node)
    assert "[fake] predict (image mean 0.0)" in log, "no warm-up although scales were cached"
    assert "recalibrate" not in log and "calibrated on its own inputs" not in log, log


def test_recalibrate_without_fp8_scales_says_why(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0)
    procs.start("pub", PUB)
    procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: len(l.chunks) >= 1, START_TIMEOUT, "a chunk")
    res = _recalibrate(listener)
    assert not res.success and "nothing to calibrate" in res.message, res.message
    # diagnostics come at their own rate: wait for one (a loaded host may not have one yet)
    listener.wait_for(lambda l: l.latest_diag().get("calibration_state") == "not_applicable",
                      10, "diagnostics saying calibration is not applicable")


@pytest.mark.parametrize("calibration", ["cached", "needed"])
def test_a_failed_graph_capture_ends_the_node_with_status_1(procs, listener, tmp_path,
                                                          calibration):
    """A GPU frontend whose CUDA-graph capture failed can never capture again in that
    process (flash_rt.core.errors.GraphCaptureError, found on the H100): the node stops
    with status 1 and a fatal line, publishing nothing, instead of running on without ever
    publishing; launch's on_exit shutdown or a supervisor then sees it. Cached scales: the
    capture is the start-up warm-up's; needed: the first one after calibrating on real
    observations, in the inference thread."""
    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0, calibration_frames=2)
    node = procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_CALIBRATION=calibration,
                       FAKE_CAPTURE_FAILS="1")
    procs.start("pub", PUB)
    assert node.wait(START_TIMEOUT) == 1, procs.log(node)
    log = procs.log(node)
    assert "[fake] graph capture failed" in log
    assert "fatal: CUDA graph capture failed (fake)" in log and "Traceback" not in log, log
    assert log.count("[fake] graph capture failed") == 1, "it tried again after the failure"
    if calibration == "needed":  # the serving path's stop, after calibrating on real frames
        assert "[fake] recalibrate #1: 2 frames" in log
        assert "cannot go on, stopping: CUDA graph capture failed (fake)" in log, log
    with listener.lock:
        assert not listener.chunks
