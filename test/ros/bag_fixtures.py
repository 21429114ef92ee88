"""Session fixtures of the rosbag tests: a real MCAP episode, its params file, the tiny
model's reference chunks; and ``run_bag`` to call the CLI in-process."""
from __future__ import annotations

import contextlib
import io
import shutil

import pytest
import yaml

from flash_rt_ros.params import NODE_NAME
from flash_rt_ros.synthetic import DEFAULT_JOINTS

# 2 cameras at 640x480 (one raw, one JPEG), 10 fps, joints at 50 Hz, 3 s; ticks at 5 Hz.
EPISODE = dict(cameras=2, duration_s=3.0, camera_rate_hz=10.0, encodings=("rgb8", "jpeg"))
CAMERA_TOPICS = ["/cam0/image_raw", "/cam1/image_raw/compressed"]
RATE_HZ = 5.0


def run_bag(*argv) -> tuple[int, str, str]:
    """``python -m flash_rt_ros.bag ARGV`` in this process: (exit status, stdout, stderr)."""
    from flash_rt_ros.bag.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse: --help, usage errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def write_bag_params(path, **overrides) -> str:
    params = {"model": "pi05", "hardware": "cpu", "camera_topics": CAMERA_TOPICS,
              "joint_state_topics": ["/joint_states"], "joint_names": list(DEFAULT_JOINTS),
              "rate_hz": RATE_HZ, "trigger": "timer", "max_observation_age_s": 0.5}
    params.update(overrides)
    path.write_text(yaml.safe_dump({NODE_NAME: {"ros__parameters": params}}))
    return str(path)


@pytest.fixture(scope="session")
def episode(tmp_path_factory):
    """The episode bag and a params file for it."""
    from flash_rt_ros.bag.episode import EpisodeSpec, write_episode

    d = tmp_path_factory.mktemp("episode")
    summary = write_episode(d / "episode", EpisodeSpec(**EPISODE))
    assert summary["camera_topics"] == CAMERA_TOPICS
    return {"bag": d / "episode", "params": write_bag_params(d / "params.yaml"), "dir": d}


@pytest.fixture(scope="session")
def reference(episode, tiny_pi05_ckpt):
    """record-reference on the episode (cpu FP32, seed 7)."""
    out = episode["dir"] / "reference"
    rc, stdout, stderr = run_bag("record-reference", episode["bag"], "--checkpoint",
                                 tiny_pi05_ckpt, "--params", episode["params"], "--seed", 7,
                                 "--out", out)
    assert rc == 0, stdout + stderr
    return out


@pytest.fixture(scope="session")
def perturbed_ckpt(tiny_pi05_ckpt, tmp_path_factory):
    """The tiny checkpoint with one wrong weight (action_out_proj[0, 0] off by 1.0)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("perturbed")
    shutil.copytree(tiny_pi05_ckpt, out, dirs_exist_ok=True)
    with safe_open(str(tiny_pi05_ckpt / "model.safetensors"), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["model.action_out_proj.weight"][0, 0] += 1.0
    save_file(tensors, str(out / "model.safetensors"), metadata=meta)
    return out
