"""Full-size Pi0.5: the hopper fast path vs the FP32 reference (on the same GPU) for 1, 2
and 3 views and horizon 10 and 50, same weights / observation / noise.

Runs when FLASH_RT_FULL=1 (writes a 13.4 GB random checkpoint to a temp dir, or uses
FLASH_RT_FULL_CKPT). Nothing is stored between runs: the reference chunks are recomputed.
With FLASH_RT_PRECISION_REPORT=<file> the measured numbers are written there as JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from flash_rt import load_model
from flash_rt.tools.make_checkpoint import make_checkpoint

from pipeline.compare import cosine, flow_cosine, max_abs, prefix_kv_cosine

pytestmark = pytest.mark.skipif(os.environ.get("FLASH_RT_FULL") != "1",
                                reason="full-size precision run: set FLASH_RT_FULL=1 (GPU, "
                                       "~14 GB disk, ~30 GB GPU memory)")
PROMPT = "pick up the red block and put it in the bowl"
CHUNK_COSINE = 0.999
RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def full_ckpt(tmp_path_factory):
    given = os.environ.get("FLASH_RT_FULL_CKPT")
    if given:
        return Path(given)
    return make_checkpoint(tmp_path_factory.mktemp("pi05_full"), "pi05", "full", seed=0)


@pytest.fixture(scope="module")
def reference(gpu, full_ckpt):
    """The FP32 reference frontend, moved to the GPU (same weights as the fast path)."""
    return load_model(full_ckpt, hardware="cpu").to(gpu)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("FLASH_RT_PRECISION_REPORT")
    if path and RESULTS:
        info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "results": RESULTS}
        Path(path).write_text(json.dumps(info, indent=2))


PRECISIONS = os.environ.get("FLASH_RT_PRECISIONS", "fp8").split(",")
# optional subset of "<views>x<horizon>" configurations, e.g. "3x10,2x50"
ONLY = set(filter(None, os.environ.get("FLASH_RT_PRECISION_CONFIGS", "").split(",")))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("horizon", [10, 50])
@pytest.mark.parametrize("views", [1, 2, 3])
def test_full_size_fast_path_matches_fp32_reference(gpu, full_ckpt, reference, camera_images,
                                                    views, horizon, precision, tmp_path_factory):
    if ONLY and f"{views}x{horizon}" not in ONLY:
        pytest.skip(f"not in FLASH_RT_PRECISION_CONFIGS={sorted(ONLY)}")
    cache = tmp_path_factory.getbasetemp() / "flash_rt_cache"
    m = load_model(full_ckpt, hardware="hopper", num_views=views, horizon=horizon,
                   cache_dir=cache, precision=precision)
    state = np.linspace(-0.8, 0.8, 8).astype(np.float32)
    images = camera_images[:views]
    # calibrate on other frames than the one measured (as on a robot)
    m.recalibrate([dict(images=[np.roll(i, 40 * k, axis=1) for i in images], state=state * 0.9,
                        prompt=PROMPT, seed=100 + k) for k in range(3)])
    seed = 7 + views
    got = m.predict(images, state, prompt=PROMPT, seed=seed).actions_normalized
    obs = m.processor.prepare(images, state, prompt=PROMPT)
    noise = m.make_noise(None, seed)[0]
    # the reference's own inference hook on the fast path's observation and noise (its
    # predict() would prepare its own 3-view, horizon-50 config)
    want = reference._infer(obs, noise)
    row = {"precision": precision, "views": views, "horizon": horizon,
           "chunk_cosine": cosine(got, want),
           "max_abs": max_abs(got, want),
           "flow_cosine": flow_cosine(got, want, noise[0].numpy()),
           "prefix_kv_cosine": prefix_kv_cosine(m.engine.acts.t["k_cache"],
                                                m.engine.acts.t["v_cache"], reference.reference,
                                                obs)}
    RESULTS.append(row)
    print(row)
    del m
    torch.cuda.empty_cache()
    assert row["chunk_cosine"] >= CHUNK_COSINE, row
