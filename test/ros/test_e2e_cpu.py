"""End to end with the real engine: publisher -> node (cpu frontend, tiny Pi0.5, Pi0 and
GR00T N1.7) -> here.

The received chunk must equal ``flash_rt.load_model(...).predict(...)`` on the same
images (regenerated from the recorded stamps and decoded as the node does), the recorded
state, prompt and seed: exactly, on cpu. With ``framework:=jax`` the node reads an openpi
checkpoint holding the same weights as the Pi0.5 safetensors one, so its chunks equal both.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import actions_of, node_args, regenerate_images  # noqa: E402

ENCS = ["rgb8", "bgr8"]
H, W = 60, 80
PARAMS_FILE = {"pi05": "config/pi05_cpu.yaml", "pi0": "config/pi0_cpu.yaml",
               "groot": "config/groot_cpu.yaml"}
OPENPI = ("--format", "openpi", "--asset-id", "robot/arm")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """``tiny_ckpt(model, *make_checkpoint options)`` -> a tiny checkpoint directory, each
    written once per module through the CLI."""
    made: dict[tuple, str] = {}

    def get(model: str, *extra: str) -> str:
        if (model, *extra) not in made:
            out = tmp_path_factory.mktemp(f"tiny_{model}")
            subprocess.run([sys.executable, "-m", "flash_rt.tools.make_checkpoint", "--model",
                            model, "--preset", "tiny", "--out", str(out), *extra], check=True,
                           capture_output=True)
            made[(model, *extra)] = str(out)
        return made[(model, *extra)]
    return get


@pytest.mark.parametrize("model", sorted(PARAMS_FILE))
def test_node_chunk_equals_direct_predict(procs, listener, tiny_ckpt, model):
    check_node_chunks(procs, listener, model, tiny_ckpt(model), "torch")


def test_node_reads_an_openpi_checkpoint_with_framework_jax(procs, listener, tiny_ckpt):
    check_node_chunks(procs, listener, "pi05", tiny_ckpt("pi05", *OPENPI), "jax",
                      "-p", "framework:=jax", "-p", "asset_id:=robot/arm",
                      same_weights_as=tiny_ckpt("pi05"))


def check_node_chunks(procs, listener, model, ckpt, framework, *params, same_weights_as=None):
    """Two chunks of the cpu node on ``ckpt`` equal ``load_model(framework=...)``'s (and
    the torch reference's on ``same_weights_as``, a safetensors twin)."""
    import flash_rt

    procs.start("pub", ["-m", "flash_rt_ros.synthetic", "--cameras", "2", "--encodings", *ENCS,
                        "--rate", "5", "--width", str(W), "--height", str(H)])
    node = procs.start("node", ["-m", "flash_rt_ros.policy_node"] + node_args(
        PARAMS_FILE[model], "-p", f"checkpoint_dir:={ckpt}",
        "-p", "camera_topics:=['/cam0/image_raw', '/cam1/image_raw']",
        "-p", "seed:=77", "-p", "max_observation_age_s:=3.0", *params))
    listener.wait_for(lambda l: len(l.chunks) >= 2, 120, "2 chunks from the cpu node")
    assert node.poll() is None, procs.log(node)

    policy = flash_rt.load_model(ckpt, model=model, framework=framework, hardware="cpu",
                                 num_views=2, action_dims=8)
    assert policy.framework == framework
    twin = same_weights_as and flash_rt.load_model(same_weights_as, model=model, hardware="cpu",
                                                   num_views=2, action_dims=8)
    for _, chunk in listener.chunks[:2]:
        images = regenerate_images(chunk, ENCS, H, W)
        result = policy.predict(images=images, state=np.asarray(chunk.state, np.float32),
                                prompt=chunk.prompt, seed=chunk.seed)
        np.testing.assert_array_equal(actions_of(chunk), result.actions)
        if twin:
            np.testing.assert_array_equal(actions_of(chunk), twin.predict(
                images=images, state=np.asarray(chunk.state, np.float32), prompt=chunk.prompt,
                seed=chunk.seed).actions)
        assert chunk.seed == 77 + chunk.sequence
        assert chunk.hardware == "cpu" and chunk.model == model
        assert chunk.checkpoint_id == policy.checkpoint_id != ""
        assert chunk.horizon == result.actions.shape[0] and chunk.action_dim == 8
