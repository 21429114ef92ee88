"""The node's own logic over real DDS between processes, with the FakePolicy test double.

Publisher process -> node process (tests/ros/run_fake_node.py: the real node, a fake
model) -> this process. Waits are generous (2-core CI); assertions are about counts and
ordering, never tight timings.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import re
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fake_policy import fake_actions  # noqa: E402
from helpers import (actions_of, assert_publishing_stops, node_args,  # noqa: E402
                     regenerate_images, write_params)
from flash_rt_ros.messages import stamp_ns  # noqa: E402

FAKE_NODE = "test/ros/run_fake_node.py"
PUB = ["-m", "flash_rt_ros.synthetic"]
START_TIMEOUT = 30.0


def _chunks(lst):
    return [m for _, m in lst.chunks]


def test_chunks_reproduce_exactly_from_recorded_inputs(procs, listener, tmp_path):
    """Three encodings (raw rgb8, raw yuv422, jpeg) decoded in the node == decoded here."""
    encs = ["rgb8", "yuv422", "jpeg"]
    topics = ["/cam0/image_raw", "/cam1/image_raw", "/cam2/image_raw/compressed"]
    pf = write_params(tmp_path / "p.yaml", camera_topics=topics, trigger="camera",
                      rate_hz=10.0, seed=1000)
    procs.start("pub", PUB + ["--cameras", "3", "--encodings", *encs, "--rate", "5",
                              "--width", "64", "--height", "48"])
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: len(l.chunks) >= 3 and len(l.trajs) >= 3, START_TIMEOUT,
                      "3 chunks")
    for chunk in _chunks(listener)[:3]:
        images = regenerate_images(chunk, encs, 48, 64)
        expected = fake_actions(images, np.asarray(chunk.state), chunk.seed, chunk.horizon,
                                chunk.action_dim)
        np.testing.assert_array_equal(actions_of(chunk), expected)
        assert chunk.seed == 1000 + chunk.sequence
        assert list(chunk.camera_topics) == topics and chunk.prompt == "pick"
        assert chunk.header.stamp == max(chunk.image_stamps + [chunk.state_stamp],
                                         key=lambda t: (t.sec, t.nanosec))
    traj = listener.trajs[0][1]
    assert len(traj.points) == chunk.horizon and list(traj.joint_names) == list(chunk.joint_names)
    # trajectory_stamp "observation": stamped with its chunk's observation time, point t due
    # (t + 1) control periods after it, so the controller skips what inference took
    first = _chunks(listener)[0]
    assert traj.header.stamp == first.header.stamp
    period = stamp_ns(first.control_period)
    assert [stamp_ns(pt.time_from_start) for pt in traj.points] == [
        (t + 1) * period for t in range(first.horizon)]
    np.testing.assert_allclose([pt.positions for pt in traj.points], actions_of(first),
                               rtol=0, atol=1e-6)  # blend_steps 0: the chunk itself
    assert node.poll() is None


def test_subscriptions_keep_running_during_slow_inference(procs, listener, tmp_path):
    """A 2 s predict must not stop frame intake, must skip ticks, and must not queue."""
    # the inputs must still be within max age when the 2 s chunk is published
    pf = write_params(tmp_path / "p.yaml", rate_hz=10.0, max_observation_age_s=3.0)
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32",
                              "--height", "24"])
    procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_DELAY_S=2.0)
    listener.wait_for(lambda l: len(l.chunks) >= 3, START_TIMEOUT + 10, "3 slow chunks")
    with listener.lock:
        (t1, c1), (t2, c2) = listener.chunks[1], listener.chunks[2]
        during = [m for t, m in listener.diags if t1 < t < t2]
    assert len(during) >= 2, "diagnostics (executor) stalled during inference"
    frames = [int(next(kv.value for kv in m.status[0].values if kv.key == "frames/camera0"))
              for m in during]
    assert frames[-1] - frames[0] >= 5, f"camera callbacks stalled during inference: {frames}"
    d = listener.latest_diag()
    assert int(d["overruns"]) >= 5, d
    # skipped, not queued: each chunk used frames newer than the previous chunk finished
    gap = (c2.image_stamps[0].sec - c1.image_stamps[0].sec) + \
        (c2.image_stamps[0].nanosec - c1.image_stamps[0].nanosec) / 1e9
    assert gap >= 1.5, f"chunk {c2.sequence} used frames only {gap:.2f} s newer"
    assert all(m.node_latency_ms < 2000 + 1000 + 1500 for _, m in listener.chunks)


def test_diagnostics_split_the_overhead_into_the_nodes_own_and_the_input_delay(
        procs, listener, tmp_path):
    """own_overhead (triggering frame in hand -> publication, minus predict) is the node's
    work; input_delay (newest stamp -> in hand) is the driver's and DDS's; per chunk they
    add up to node_overhead. A node that lost the arrival time would report ~now."""
    pf = write_params(tmp_path / "p.yaml", rate_hz=10.0, trigger="camera")
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32",
                              "--height", "24", "--stamp-each"])
    procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_DELAY_S=0.05)
    listener.wait_for(lambda l: len(l.chunks) >= 8, START_TIMEOUT, "8 chunks")
    time.sleep(0.7)  # a diagnostics period (0.5 s) after them
    d = {k: float(v) for k, v in listener.latest_diag().items()
         if k.endswith(("overhead_ms_p50", "delay_ms_p50"))}
    own, delay, total = (d["own_overhead_ms_p50"], d["input_delay_ms_p50"],
                         d["node_overhead_ms_p50"])
    assert 0.0 <= own <= total + 0.5 and own < 200.0, d
    assert 0.0 <= delay <= total + 0.5, d
    assert abs(own + delay - total) < max(5.0, 0.5 * total), d


BAD = [  # publisher --malformed kind, extra publisher args, params, expected counter
    ("truncated", [], {}, "malformed/camera0/truncated"),
    ("encoding", [], {}, "malformed/camera0/unknown_encoding"),
    ("step", [], {}, "malformed/camera0/bad_step"),
    ("stamp", [], {}, "malformed/camera0/zero_stamp"),
    ("jpeg", ["--encodings", "jpeg", "rgb8"],
     {"camera_topics": ["/cam0/image_raw/compressed", "/cam1/image_raw"]},
     "malformed/camera0/undecodable"),
    ("joints", [], {}, "malformed/joint_state/size_mismatch"),
    ("dup_joints", [], {}, "malformed/joint_state/duplicate_joint"),
]


@pytest.mark.parametrize("kind,pub_args,params,counter", BAD, ids=[b[0] for b in BAD])
def test_malformed_inputs_never_produce_chunks(procs, listener, tmp_path, kind, pub_args,
                                               params, counter):
    pf = write_params(tmp_path / "p.yaml", **params)
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32", "--height",
                              "24", "--malformed", kind] + pub_args)
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: int(l.latest_diag().get(counter, 0)) >= 10, START_TIMEOUT,
                      counter)
    time.sleep(1.0)
    assert listener.chunks == [], f"a chunk was published from {kind} inputs"
    assert node.poll() is None, procs.log(node)
    log = procs.log(node)
    assert log.count("dropped malformed input") == 1, "must log once per cause, throttled"


def test_size_change_is_counted_and_good_frames_still_flow(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml")
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32", "--height",
                              "24", "--malformed", "size", "--malformed-every", "2"])
    procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: int(l.latest_diag().get(
        "malformed/camera0/size_mismatch", 0)) >= 3 and len(l.chunks) >= 2, START_TIMEOUT,
        "size_mismatch counted and chunks")


def test_nan_joints_block_publishing(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml")
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32", "--height",
                              "24", "--nan-joints-after", "0.001"])
    procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: int(l.latest_diag().get("skipped/nonfinite_state", 0)) >= 5,
                      START_TIMEOUT, "nonfinite_state skips")
    assert listener.chunks == []
    assert listener.latest_diag()["_level"] == 2  # ERROR: nothing published


def test_camera_that_stops_blocks_publishing(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", max_observation_age_s=0.5)
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32", "--height",
                              "24", "--stop-camera", "1", "--stop-after", "6"])
    procs.start("node", [FAKE_NODE] + node_args(pf))
    assert_publishing_stops(listener, "skipped/stale_camera", START_TIMEOUT)
    for _, c in listener.chunks:  # every chunk published used a frame within max age
        for st in c.image_stamps:
            age = (c.header.stamp.sec - st.sec) + (c.header.stamp.nanosec - st.nanosec) / 1e9
            assert age <= 0.5


def test_burst_at_10x_rate(procs, listener, tmp_path):
    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0)
    pub = procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32",
                                    "--height", "24", "--burst", "10", "--burst-after", "0.1"])
    node = procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: len(l.chunks) >= 1, START_TIMEOUT, "first chunk")
    f0 = int(listener.wait_for(lambda l: l.latest_diag().get("frames/camera0"), 10, "diag"))
    time.sleep(6.0)
    d = listener.latest_diag()
    assert int(d["frames/camera0"]) > f0, d  # still taking frames during the burst
    assert node.poll() is None
    # Chunks keep coming while the burst goes on. How many per second a 2-core machine
    # shared by publisher, node and listener manages is not asserted (CI saw 0.7 Hz of the
    # 5 Hz target): only that publishing never stops, with a generous deadline.
    t_mark = time.monotonic()
    listener.wait_for(lambda l: any(t > t_mark for t, _ in l.chunks), 20.0,
                      "a chunk while the burst continues")
    # The burst really happened: judged on the sender's own count, because how many of the
    # 100 Hz frames a 2-core machine delivers to the node is not the node's guarantee
    # (sensor-data QoS drops what it cannot take; the node must not queue them).
    procs.stop(pub)
    sent = re.search(r"published (\d+) observations in ([\d.]+) s", procs.log(pub))
    assert sent, procs.log(pub)
    assert int(sent[1]) / float(sent[2]) >= 3 * 10, sent[0]  # >= 3x the nominal 10 Hz
    assert not any(k.startswith("errors/") for k in d), d


def test_prompt_changes_at_runtime(procs, listener, tmp_path):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from std_msgs.msg import String

    pf = write_params(tmp_path / "p.yaml", rate_hz=5.0)
    procs.start("pub", PUB + ["--cameras", "2", "--rate", "10", "--width", "32", "--height",
                              "24"])
    procs.start("node", [FAKE_NODE] + node_args(pf))
    listener.wait_for(lambda l: len(l.chunks) >= 1, START_TIMEOUT, "first chunk")
    assert _chunks(listener)[0].prompt == "pick"
    listener.wait_for(lambda l: l.prompt_pub.get_subscription_count() > 0, 10, "prompt sub")
    listener.prompt_pub.publish(String(data="open the drawer"))
    listener.wait_for(lambda l: l.chunks[-1][1].prompt == "open the drawer", 10, "topic prompt")

    client = AsyncParameterClient(listener.node, "flash_rt_policy")
    assert client.wait_for_services(10.0)
    res = _result(client.set_parameters([Parameter("prompt", value="stack the cups")]))
    assert res.results[0].successful
    listener.wait_for(lambda l: l.chunks[-1][1].prompt == "stack the cups", 10, "param prompt")
    res = _result(client.set_parameters([Parameter("rate_hz", value=50.0)]))
    assert not res.results[0].successful and "fixed at start-up" in res.results[0].reason
    res = _result(client.set_parameters([Parameter("prompt", value="x" * 5000)]))
    reason = res.results[0].reason
    assert not res.results[0].successful and "more than max_prompt_chars" in reason, reason
    assert len(reason) < 300, "the refusal quotes the prompt cut short"
    assert listener.chunks[-1][1].prompt == "stack the cups"


def _result(future, timeout=10.0):
    end = time.monotonic() + timeout
    while not future.done() and time.monotonic() < end:
        time.sleep(0.05)
    assert future.done(), "parameter service did not answer"
    return future.result()


def _shm() -> set:
    return {n for n in os.listdir("/dev/shm") if "port" not in n} if os.path.isdir("/dev/shm") \
        else set()


def _in_use_shm() -> set:
    """/dev/shm names some live process maps, with their Fast DDS lock files (``<name>_el``):
    the segments of other DDS processes on the host (another test run, a robot's nodes),
    which are not ours and not leaked. A segment our stopped processes left behind is mapped
    by nobody."""
    names = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read()
        except OSError:  # gone, or not ours to read
            continue
        for line in maps.splitlines():
            if "/dev/shm/" in line:
                name = line.split("/dev/shm/", 1)[1].split()[0]
                names |= {name, f"{name}_el"}
    return names


def _busy_fake_node(procs, tmp_path, rate_hz, cam_rate, delay_s, **env):
    """Two cameras and the fake-policy node (each predict takes delay_s), started and ready;
    ``env``: further run_fake_node settings."""
    pf = write_params(tmp_path / "p.yaml", rate_hz=rate_hz)
    pub = procs.start("pub", PUB + ["--cameras", "2", "--rate", str(cam_rate), "--width", "32",
                                    "--height", "24"])
    node = procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_DELAY_S=delay_s, **env)
    end = time.monotonic() + START_TIMEOUT
    while "ready:" not in procs.log(node) and time.monotonic() < end:
        time.sleep(0.2)
    return pub, node


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_shutdown_within_2s_even_mid_inference(procs, tmp_path, sig):
    before = _shm()
    pub, node = _busy_fake_node(procs, tmp_path, rate_hz=5.0, cam_rate=10, delay_s=5.0)
    time.sleep(2.5)  # ticks have started a 5 s predict by now
    took = procs.stop(node, sig)
    assert took < 2.0, f"node took {took:.2f} s to exit on {sig.name}"
    assert node.returncode == 0, procs.log(node)
    procs.stop(pub, sig)
    for p in (node, pub):
        with pytest.raises(ProcessLookupError):
            os.killpg(p.pid, 0)  # no process of the group is left
    time.sleep(0.5)
    leaked = _shm() - before - _in_use_shm()
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


def _signal_twice(node, second=signal.SIGINT, gap_s=0.005) -> float:
    """SIGINT, then ``second`` ``gap_s`` later, to the node's group; seconds until it
    exited (at most 5)."""
    t0 = time.monotonic()
    os.killpg(node.pid, signal.SIGINT)
    time.sleep(gap_s)
    os.killpg(node.pid, second)
    try:
        node.wait(5)
    except subprocess.TimeoutExpired:
        pass
    return time.monotonic() - t0


def _assert_clean_exit(procs, node, took):
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(5)
    log = procs.log(node)
    assert took < 2.0, f"node took {took:.2f} s to exit:\n{log}"
    assert node.returncode == 0, log
    for bad in ("Traceback", "KeyboardInterrupt", "terminate called", "fatal"):
        assert bad not in log, log


@pytest.mark.parametrize("delay_s", [5.0, 0.0], ids=["mid_inference", "idle"])
def test_ctrl_c_under_launch_two_sigints_exit_cleanly(procs, tmp_path, delay_s):
    """Ctrl-C in a terminal running ros2 launch: the node gets SIGINT from the terminal and
    another forwarded by launch a few ms later. The second used to land in the clean-up
    (joining the worker) as a KeyboardInterrupt traceback, or skip rclpy's shutdown and
    abort at exit."""
    pub, node = _busy_fake_node(procs, tmp_path, rate_hz=5.0, cam_rate=10, delay_s=delay_s)
    time.sleep(2.5)  # with delay_s 5: a predict is running by now
    _assert_clean_exit(procs, node, _signal_twice(node))


def test_sigint_then_sigterm_exit_cleanly(procs, tmp_path):
    """launch escalates to SIGTERM when a node is still there after SIGINT."""
    pub, node = _busy_fake_node(procs, tmp_path, rate_hz=5.0, cam_rate=10, delay_s=5.0)
    time.sleep(2.5)
    _assert_clean_exit(procs, node, _signal_twice(node, signal.SIGTERM, gap_s=0.05))


def test_signal_during_model_load_exits_cleanly(procs, tmp_path):
    """A stop while the model loads (seconds to minutes on a GPU) does not wait for it."""
    pf = write_params(tmp_path / "p.yaml")
    node = procs.start("node", [FAKE_NODE] + node_args(pf), FAKE_LOAD_S=30.0)
    end = time.monotonic() + START_TIMEOUT
    while "[fake] loading" not in procs.log(node) and time.monotonic() < end:
        time.sleep(0.1)
    _assert_clean_exit(procs, node, _signal_twice(node))


def test_chunk_finished_during_shutdown_is_not_an_inference_error(procs, tmp_path):
    # a predict that ends after SIGINT has shut the context down has nowhere to publish:
    # the node drops it quietly instead of logging "inference failed" (and failing to log
    # that to /rosout) on every normal stop
    pub, node = _busy_fake_node(procs, tmp_path, rate_hz=20.0, cam_rate=30, delay_s=0.15)
    time.sleep(2.3)  # 0.15 s predicts every 50 ms tick: the signal most likely lands in one
    procs.stop(node, signal.SIGINT)
    procs.stop(pub, signal.SIGINT)
    log = procs.log(node)
    assert node.returncode == 0, log
    assert "inference failed" not in log and "context is invalid" not in log, log


def test_stop_between_the_ok_check_and_the_wait_is_a_clean_exit(procs, tmp_path):
    # rclpy's signal handler can shut the context down after the executor checked ok() and
    # before it builds its wait set; CI once saw that SIGTERM end in "fatal: failed to
    # initialize wait set" and exit status 1. run_fake_node forces exactly that order.
    pub, node = _busy_fake_node(procs, tmp_path, rate_hz=20.0, cam_rate=30, delay_s=0.15,
                                FAKE_STOP_RACE_S=1.5)
    code = node.wait(START_TIMEOUT)
    procs.stop(pub, signal.SIGINT)
    log = procs.log(node)
    assert "ready:" in log, log  # the race was reached while serving, not during start-up
    assert code == 0 and "fatal" not in log and "Traceback" not in log, log
