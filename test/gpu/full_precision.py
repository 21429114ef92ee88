"""Full-size precision of a hopper fast path vs the FP32 reference on the same GPU, for
1, 2 and 3 views and horizon 10 and 50, same weights / observation / noise: the fixtures
and the test that test_pi05_precision_full.py and test_pi0_precision_full.py import (each
names its ``MODEL``, ``CKPT_ENV`` and ``REPORT_ENV``; not collected on its own).

Runs when FLASH_RT_FULL=1: writes a random full-size checkpoint to a temp dir (13.4 GB),
or uses the one named by the module's ``CKPT_ENV``. Nothing is stored between runs: the
reference chunks are recomputed. With ``REPORT_ENV`` set to a file, the measured numbers
are written there as JSON. FLASH_RT_PRECISIONS (comma list, default fp8) and
FLASH_RT_PRECISION_CONFIGS (e.g. "3x10,2x50") choose what runs. FLASH_RT_PRECISION_VS_SEQUENCE=1
also loads the model with the kernel sequence as its expert (FLASH_RT_EXPERT=sequence) where
the persistent kernel ran, calibrates it on the same frames and predicts the same
observation and noise: the chunk cosine between the two. Issue 14 asks >= 0.9999; what two
correct roundings of one step differ by at the chunk is measured beside it (the sequence
with its flash decoder attention instead of the GEMM one), and the kernel may drift from
the sequence as far as the kernel tests allow against that floor (drift_allowed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from flash_rt import load_model
from flash_rt.hardware.attention import DECODER, FLASH, IMPL_ENV
from flash_rt.models.common.paligemma_pipeline.hardware_pipeline import (EXPERT_ENV,
                                                                         MEGAKERNEL, SEQUENCE)
from flash_rt.tools.expert_testbed import drift_allowed
from flash_rt.tools.make_checkpoint import make_checkpoint

from pipeline.compare import cosine, flow_cosine, max_abs, prefix_kv_cosine, state_kv_cosine

ENABLED = os.environ.get("FLASH_RT_FULL") == "1"
SKIP_REASON = ("full-size precision run: set FLASH_RT_FULL=1 (GPU, ~14 GB disk, ~30 GB GPU "
               "memory)")
PROMPT = "pick up the red block and put it in the bowl"
CHUNK_COSINE = 0.999
STATE_KV_COSINE = 0.99  # Pi0's state-token K/V row (the prefix K/V bound of the tiny tests)
PRECISIONS = os.environ.get("FLASH_RT_PRECISIONS", "fp8").split(",")
# optional subset of "<views>x<horizon>" configurations, e.g. "3x10,2x50"
ONLY = set(filter(None, os.environ.get("FLASH_RT_PRECISION_CONFIGS", "").split(",")))
VIEWS, HORIZONS = (1, 2, 3), (10, 50)


def full_checkpoint(tmp_path_factory, model: str, env: str) -> Path:
    given = os.environ.get(env)
    if given:
        return Path(given)
    return make_checkpoint(tmp_path_factory.mktemp(f"{model}_full"), model, "full", seed=0)


def write_report(env: str, results: list[dict]) -> None:
    path = os.environ.get(env)
    if path and results:
        info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                "results": results}
        Path(path).write_text(json.dumps(info, indent=2))


VS_SEQUENCE = os.environ.get("FLASH_RT_PRECISION_VS_SEQUENCE") == "1"
STATE = np.linspace(-0.8, 0.8, 8).astype(np.float32)


def calibrated_chunk(full_ckpt, model: str, images, views: int, horizon: int, precision: str,
                     cache_dir, seed: int):
    """(model, its chunk): loaded, calibrated on other frames (as on a robot), then one
    prediction of ``images`` with STATE, PROMPT and noise ``seed``."""
    m = load_model(full_ckpt, model=model, hardware="hopper", num_views=views,
                   horizon=horizon, cache_dir=cache_dir, precision=precision)
    m.recalibrate([dict(images=[np.roll(i, 40 * k, axis=1) for i in images], state=STATE * 0.9,
                        prompt=PROMPT, seed=100 + k) for k in range(3)])
    return m, m.predict(images, STATE, prompt=PROMPT, seed=seed).actions_normalized


def sequence_chunk(full_ckpt, model, images, views, horizon, precision, cache_dir, seed,
                   decoder_attn: str | None = None):
    """The same prediction with the kernel sequence as the expert (FLASH_RT_EXPERT), and
    optionally another decoder attention (FLASH_RT_DECODER_ATTN)."""
    env = {EXPERT_ENV: SEQUENCE, **({IMPL_ENV[DECODER]: decoder_attn} if decoder_attn else {})}
    with mock.patch.dict(os.environ, env):  # (read when the engine is built)
        m, chunk = calibrated_chunk(full_ckpt, model, images, views, horizon, precision,
                                    cache_dir, seed)
        assert m.engine.expert_path == SEQUENCE
    del m
    torch.cuda.empty_cache()
    return chunk


def measure(model: str, full_ckpt, reference, camera_images, views: int, horizon: int,
            precision: str, cache_dir) -> dict:
    """Calibrate the hopper path on other frames (as on a robot), predict one observation
    and compare it with the reference on the fast path's own observation and noise."""
    if ONLY and f"{views}x{horizon}" not in ONLY:
        pytest.skip(f"not in FLASH_RT_PRECISION_CONFIGS={sorted(ONLY)}")
    images, seed = camera_images[:views], 7 + views
    m, got = calibrated_chunk(full_ckpt, model, images, views, horizon, precision, cache_dir,
                              seed)
    obs = m.processor.prepare(images, STATE, prompt=PROMPT)
    noise = m.make_noise(None, seed)[0]
    # the reference's own inference hook on the fast path's observation and noise (its
    # predict() would prepare its own 3-view, horizon-50 config)
    want = reference._infer(obs, noise)
    caches = m.engine.acts.t["k_cache"], m.engine.acts.t["v_cache"]
    row = {"model": model, "precision": precision, "views": views, "horizon": horizon,
           "chunk_cosine": cosine(got, want), "max_abs": max_abs(got, want),
           "flow_cosine": flow_cosine(got, want, noise[0].numpy()),
           "prefix_kv_cosine": prefix_kv_cosine(*caches, reference.reference, obs),
           "expert": m.engine.expert_path}
    if m.config.state_token:
        row["state_kv_cosine"] = state_kv_cosine(*caches, reference.reference, obs)
    kernel = m.engine.expert_path == MEGAKERNEL
    del m
    torch.cuda.empty_cache()
    if VS_SEQUENCE and kernel:
        args = (full_ckpt, model, images, views, horizon, precision, cache_dir, seed)
        seq = sequence_chunk(*args)
        seq_flash = sequence_chunk(*args, decoder_attn=FLASH)
        row["kernel_vs_sequence_cosine"] = cosine(got, seq)
        row["kernel_vs_sequence_max_abs"] = max_abs(got, seq)
        row["sequence_chunk_cosine"] = cosine(seq, want)
        row["sequence_flash_vs_gemm_cosine"] = cosine(seq_flash, seq)
    print(row)
    return row


@pytest.fixture(scope="module")
def full_ckpt(request, tmp_path_factory):
    return full_checkpoint(tmp_path_factory, request.module.MODEL, request.module.CKPT_ENV)


@pytest.fixture(scope="module")
def reference(gpu, full_ckpt, request):
    """The FP32 reference frontend, moved to the GPU (same weights as the fast path)."""
    return load_model(full_ckpt, model=request.module.MODEL, hardware="cpu").to(gpu)


@pytest.fixture(scope="module")
def results(request):
    rows: list[dict] = []
    yield rows
    write_report(request.module.REPORT_ENV, rows)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("views", VIEWS)
def test_full_size_fast_path_matches_fp32_reference(gpu, full_ckpt, reference, results,
                                                    camera_images, views, horizon, precision,
                                                    tmp_path_factory, request):
    row = measure(request.module.MODEL, full_ckpt, reference, camera_images, views, horizon,
                  precision, tmp_path_factory.getbasetemp() / "flash_rt_cache")
    results.append(row)
    assert row["chunk_cosine"] >= CHUNK_COSINE, row
    if "kernel_vs_sequence_cosine" in row:
        allowed = drift_allowed(row["sequence_flash_vs_gemm_cosine"])
        assert 1.0 - row["kernel_vs_sequence_cosine"] <= allowed, row
    assert row.get("state_kv_cosine", 1.0) >= STATE_KV_COSINE, row
