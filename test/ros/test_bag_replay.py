"""record-reference -> replay (direct) -> compare on the episode bag with the tiny model:
identical chunks on cpu pass with cosine 1.0; one wrong weight fails the comparison."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from bag_fixtures import CAMERA_TOPICS, RATE_HZ, run_bag  # noqa: E402

from flash_rt_ros.bag.reader import BagReader  # noqa: E402
from flash_rt_ros.chunks import stamp_seed  # noqa: E402

NS = 1_000_000_000
PNG = b"\x89PNG\r\n\x1a\n"


def _replay(episode, ckpt, out, *extra):
    rc, stdout, stderr = run_bag("replay", episode["bag"], "--checkpoint", ckpt, "--params",
                                 episode["params"], "--seed", 7, "--hardware", "cpu",
                                 "--out", out, *extra)
    assert rc == 0, stdout + stderr
    return out


def test_reference_bag_holds_one_chunk_per_tick_with_observation_stamps(reference, episode):
    with BagReader(reference) as bag:
        assert bag.topics == {"/reference/action_chunk": "flash_rt_ros_msgs/msg/ActionChunk"}
        meta = bag.custom_data
        logged = [m.log_time_ns for m in bag.messages()]
        chunks = bag.chunks()
    assert meta["flash_rt.reference"] == "cpu" and meta["flash_rt.seed_mode"] == "stamp"
    assert meta["flash_rt.prompt"] == "pick up the red block and put it in the bin"
    period = int(NS / RATE_HZ)
    assert len(chunks) == 14 and all(t % period == 0 for t in logged)  # ticks at 5 Hz
    for c, tick in zip(chunks, logged):
        assert c.stamp_ns == max(*c.image_stamps_ns, c.state_stamp_ns) < tick
        assert tick - c.stamp_ns < period  # the newest inputs before the tick
        assert c.seed == stamp_seed(7, c.stamp_ns)
        assert c.camera_topics == tuple(CAMERA_TOPICS) and c.actions.shape == (10, 8)
        assert c.hardware == "cpu" and c.prompt == meta["flash_rt.prompt"]
    assert len({c.stamp_ns for c in chunks}) == len(chunks)
    # The bag embeds ActionChunk's definition (MCAP schema) as read from msg/.
    mcap = (reference / "reference.mcap").read_bytes()
    assert b"flash_rt_ros_msgs/msg/ActionChunk" in mcap and b"float32[] actions" in mcap


def test_reference_bag_is_what_ros2_would_play(reference):
    """Its type hash is the one rosidl generated for the built interface, and ROS 2's own
    deserializer reads its messages back field for field."""
    from rclpy.serialization import deserialize_message

    from flash_rt_ros.messages import action_chunk
    from flash_rt_ros_msgs.msg import ActionChunk

    meta = yaml.safe_load((reference / "metadata.yaml").read_text())
    (topic,) = meta["rosbag2_bagfile_information"]["topics_with_message_count"]
    generated = json.loads((Path(sys.prefix) / "share" / "flash_rt_ros_msgs" / "msg" /
                            "ActionChunk.json").read_text())
    assert topic["topic_metadata"]["type_description_hash"] == \
        generated["type_hashes"][0]["hash_string"]
    with BagReader(reference) as bag:
        m = next(bag.messages())
        rec = bag.chunks()[0]
    msg = deserialize_message(m.raw, ActionChunk)
    assert msg == action_chunk(rec)


def test_direct_replay_on_cpu_is_identical(reference, episode, tiny_pi05_ckpt, tmp_path):
    run = _replay(episode, tiny_pi05_ckpt, tmp_path / "run")
    report_path, plot_path = tmp_path / "report.json", tmp_path / "plot.png"
    rc, out, err = run_bag("compare", reference, run, "--report", report_path,
                           "--plot", plot_path)
    assert rc == 0, out + err
    assert "PASS" in out and "matched 14 of 14" in out
    report = json.loads(report_path.read_text())
    s = report["summary"]
    assert report["verdict"] == "pass" and s["matched"] == s["reference_chunks"] == 14
    assert s["cosine"]["min"] == 1.0 and s["max_abs"]["max"] == 0.0
    assert len(report["per_dim"]) == 8 and all(d["max_abs"] == 0 for d in report["per_dim"])
    assert report["provenance"]["engine"]["flash_rt.hardware"] == "cpu"
    assert report["versions"]["rosbags"] != "unknown"
    assert plot_path.read_bytes().startswith(PNG) and plot_path.stat().st_size > 10_000


def test_one_wrong_weight_fails_the_comparison(reference, episode, perturbed_ckpt, tmp_path):
    run = _replay(episode, perturbed_ckpt, tmp_path / "run")
    rc, out, err = run_bag("compare", reference, run, "--report", tmp_path / "r.json",
                           "--no-plot")
    assert rc == 1, out + err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verdict"] == "fail" and "below cosine 0.999" in report["reasons"][0]
    assert report["summary"]["matched"] == 14 and report["summary"]["cosine"]["min"] < 0.999
    worst = report["worst"][0]
    assert worst["cosine"] == report["summary"]["cosine"]["min"]
    # the wrong weight acts on action dim 0 first; the flow spreads some of it to the others
    assert report["per_dim"][0]["max_abs"] > 3 * max(d["max_abs"] for d in report["per_dim"][1:])
    assert report["warnings"] and "different checkpoints" in report["warnings"][0]
    assert "FAIL" in out and "worst:" in out


def test_compare_reports_unmatched_chunks_instead_of_dropping_them(reference, tmp_path):
    from flash_rt_ros.bag.compare import compare

    with BagReader(reference) as bag:
        ref = bag.chunks()
    eng = [ref[0], ref[1], ref[2]]
    eng[1] = type(ref[1])(**{**ref[1].__dict__, "image_stamps_ns": (1, 2)})
    eng[2] = type(ref[2])(**{**ref[2].__dict__, "stamp_ns": ref[2].stamp_ns + 1})
    report, _ = compare(ref, eng, min_matched=2)
    u, s = report["unmatched"], report["summary"]
    assert (s["matched"], s["input_mismatch"], s["engine_without_reference"]) == (1, 1, 1)
    assert u["input_mismatch"][0]["reason"] == "camera stamps differ"
    assert u["engine_without_reference"][0]["stamp_ns"] == ref[2].stamp_ns + 1
    assert len(u["reference_without_engine"]) == 13
    assert report["verdict"] == "fail" and "only 1 matched" in report["reasons"][0]
    assert np.isclose(s["cosine"]["min"], 1.0)


def test_model_option_replays_pi0(episode, tiny_pi0_ckpt, tmp_path):
    """--model pi0 with a Pi0.5 params file: the reference and the engine run Pi0 and the
    chunks say so."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    common = ("--checkpoint", tiny_pi0_ckpt, "--params", episode["params"], "--model", "pi0",
              "--seed", 7)
    rc, out, err = run_bag("record-reference", episode["bag"], *common, "--out", ref)
    assert rc == 0, out + err
    rc, out, err = run_bag("replay", episode["bag"], *common, "--hardware", "cpu", "--out", run)
    assert rc == 0, out + err
    rc, out, err = run_bag("compare", ref, run, "--no-plot", "--report", tmp_path / "r.json")
    assert rc == 0 and "matched 14 of 14" in out, out + err
    with BagReader(run) as bag:
        assert {c.model for c in bag.chunks()} == {"pi0"}
