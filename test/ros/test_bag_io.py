"""Rosbag I/O: the episode generator's bags (MCAP and sqlite3) with rosbag2 v9 metadata,
clear errors for broken bags, the params-file reader and the CLI's help."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from bag_fixtures import CAMERA_TOPICS, run_bag  # noqa: E402

from flash_rt_ros.bag.reader import BagError, BagReader  # noqa: E402

NS = 1_000_000_000


def _metadata(bag) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def test_episode_bag_has_rosbag2_v9_metadata(episode):
    meta = _metadata(episode["bag"])
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    files = meta["relative_file_paths"]
    assert files == [f["path"] for f in meta["files"]] and (episode["bag"] / files[0]).is_file()
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert set(topics) == {*CAMERA_TOPICS, "/joint_states", "/prompt"}
    for t in topics.values():
        tm = t["topic_metadata"]
        assert tm["serialization_format"] == "cdr"
        assert tm["type_description_hash"].startswith("RIHS01_")
        assert isinstance(tm["offered_qos_profiles"], list)  # v9: a YAML list, not a string
    assert topics["/cam0/image_raw"]["topic_metadata"]["type"] == "sensor_msgs/msg/Image"
    assert topics["/cam0/image_raw"]["message_count"] == 30
    assert topics["/joint_states"]["message_count"] == 150
    assert meta["message_count"] == sum(t["message_count"] for t in topics.values())
    assert isinstance(meta["custom_data"], dict) and meta["custom_data"]["flash_rt.kind"] == "episode"
    assert isinstance(meta["ros_distro"], str) and meta["duration"]["nanoseconds"] > 2.9 * NS


def test_episode_messages_decode_like_a_real_recording(episode):
    with BagReader(episode["bag"]) as bag:
        seen = {}
        for m, msg in bag.decoded():
            seen.setdefault(m.topic, []).append((m, msg))
    raw = seen["/cam0/image_raw"][0][1]
    assert (raw.height, raw.width, raw.encoding, raw.step) == (480, 640, "rgb8", 640 * 3)
    jpeg = seen["/cam1/image_raw/compressed"][0][1]
    assert jpeg.format == "jpeg"
    assert cv2.imdecode(np.asarray(jpeg.data), cv2.IMREAD_COLOR).shape == (480, 640, 3)
    frames = [np.asarray(msg.data) for _, msg in seen["/cam0/image_raw"][:2]]
    assert not np.array_equal(frames[0], frames[1]), "the scene should move"
    for topic in (*CAMERA_TOPICS, "/joint_states"):
        for m, msg in seen[topic]:
            stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
            assert 0 < m.log_time_ns - stamp < 20_000_000, "logged shortly after capture"
    positions = np.array([msg.position for _, msg in seen["/joint_states"]])
    assert positions.shape == (150, 8) and np.abs(np.diff(positions, axis=0)).max() < 0.05
    assert seen["/prompt"][0][1].data == "pick up the red block and put it in the bin"


def test_sqlite3_bag_is_written_and_read(tmp_path):
    bag = tmp_path / "ep"
    rc, out, err = run_bag("make-episode", bag, "--storage", "sqlite3", "--cameras", "2",
                           "--width", "64", "--height", "48", "--duration", "1",
                           "--encodings", "rgb8", "png")
    assert rc == 0, err
    meta = _metadata(bag)
    assert meta["version"] == 9 and meta["storage_identifier"] == "sqlite3"
    assert meta["relative_file_paths"] == ["ep.db3"]
    with BagReader(bag) as r:
        assert r.topics["/cam1/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
        msgs = list(r.decoded(["/cam0/image_raw"]))
    assert len(msgs) == 30 and msgs[0][1].width == 64


def test_truncated_mcap_names_file_offset_and_last_topic(episode, tmp_path):
    bag = tmp_path / "cut"
    shutil.copytree(episode["bag"], bag)
    mcap = bag / "episode.mcap"
    os.truncate(mcap, mcap.stat().st_size // 2)
    with pytest.raises(BagError) as err:
        BagReader(bag)
    text = str(err.value)
    assert str(mcap) in text and "truncated or damaged MCAP, offset " in text, text
    assert "record cut off after" in text and "last complete message before it: topic /" in text


def test_corrupt_message_names_file_topic_and_index(tmp_path):
    from flash_rt_ros.bag.writer import BagWriter

    bag = tmp_path / "bad"
    with BagWriter(bag) as w:
        w.write_raw("/cam0/image_raw", "sensor_msgs/msg/Image", NS, b"\x00\x01\x00\x00\x07")
    with BagReader(bag) as r, pytest.raises(BagError) as err:
        list(r.decoded())
    text = str(err.value)
    assert str(bag / "bad.mcap") in text and "message #0 on topic /cam0/image_raw" in text, text


@pytest.mark.parametrize("what", ["truncated", "missing_topic", "not_a_bag"])
def test_cli_reports_a_broken_input_in_one_line(episode, tmp_path, what, tiny_pi05_ckpt):
    bag, params = tmp_path / "b", episode["params"]
    if what == "truncated":
        shutil.copytree(episode["bag"], bag)
        os.truncate(bag / "episode.mcap", 100_000)
    elif what == "missing_topic":
        bag = episode["bag"]
        params = str(tmp_path / "p.yaml")
        shutil.copy(episode["params"], params)
        with open(params) as f:
            text = f.read().replace("/cam0/image_raw", "/front/image_raw")
        with open(params, "w") as f:
            f.write(text)
    else:
        bag.mkdir()
        (bag / "metadata.yaml").write_text("not: [a bag")
    rc, out, err = run_bag("record-reference", bag, "--checkpoint", tiny_pi05_ckpt,
                           "--params", params, "--out", tmp_path / "ref")
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert str(bag) in err
    if what == "missing_topic":
        assert "no topic /front/image_raw (camera 0, raw); the bag has" in err
    assert not (tmp_path / "ref").exists()


def test_params_file_reader_types_and_refusals(tmp_path):
    from flash_rt_ros.params import load_params_file

    pf = tmp_path / "p.yaml"
    pf.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"rate_hz": 3}},
                                  "flash_rt_policy": {"ros__parameters": {
                                      "joint_names": ["a", "b"], "use_sim_time": True}}}))
    p = load_params_file(pf, {"camera_topics": "/front/image_raw"})
    assert p.rate_hz == 3.0 and isinstance(p.rate_hz, float)
    assert p.joint_names == ("a", "b") and p.camera_topics == ("/front/image_raw",)
    with pytest.raises(ValueError, match="unknown parameter"):
        load_params_file(pf, {"rate": 2.0})
    with pytest.raises(ValueError, match="joint_state_topic is now joint_state_topics"):
        load_params_file(pf, {"joint_state_topic": "/js"})
    with pytest.raises(ValueError, match="seed_mode: must be one of"):
        load_params_file(pf, {"seed_mode": "random"})
    with pytest.raises(ValueError, match="seed: expected an integer"):
        load_params_file(pf, {"seed": "zero"})


def test_cli_help_for_every_subcommand():
    top = subprocess.run([sys.executable, "-m", "flash_rt_ros.bag", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    for cmd in ("make-episode", "record-reference", "replay", "compare"):
        assert cmd in top.stdout
        rc, out, _ = run_bag(cmd, "--help")
        assert rc == 0 and out.startswith("usage: flash_rt_bag " + cmd), out
    assert "--reference {cpu,cuda-fp32,cuda-bf16}" in run_bag("record-reference", "--help")[1]
    assert "--mode {direct,node}" in run_bag("replay", "--help")[1]
    assert "--min-cosine" in run_bag("compare", "--help")[1]


def test_cuda_reference_without_a_gpu_is_refused_in_one_line(episode, tmp_path, tiny_pi05_ckpt):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the CUDA reference would run")
    rc, _, err = run_bag("record-reference", episode["bag"], "--checkpoint", tiny_pi05_ckpt,
                         "--params", episode["params"], "--reference", "cuda-fp32",
                         "--out", tmp_path / "ref")
    assert rc == 2 and err == "error: --reference cuda-fp32 needs a CUDA device; none is visible\n"
