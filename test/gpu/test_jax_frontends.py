"""The jax GPU frontends (openpi checkpoints) against their torch twins on tiny Pi0.5 and
Pi0, run on whatever GPU is present via ``hardware=``: both read the same random weights (one
seed, two formats) into bit-identical converted buffers and, with the same calibration and
the same GEMM kernels, return identical actions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flash_rt import load_model
from flash_rt.models.common.paligemma_pipeline.gemm import CANDIDATES_ENV

HARDWARE = {"hopper": "JaxFrontendHopper", "thor": "JaxFrontendThor",
            "rtx_sm120": "JaxFrontendRtx"}
MODELS = {"pi05": "Pi05", "pi0": "Pi0"}
PROMPT = "pick up the red block and put it in the bowl"


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("hw", sorted(HARDWARE))
def test_jax_frontend_equals_torch_frontend(gpu, hw, model, request, camera_images, tmp_path,
                                            monkeypatch):
    # one cuBLASLt candidate per shape: the autotune of each model cannot pick different
    # kernels (whose accumulation orders would differ in the last bits)
    monkeypatch.setenv(CANDIDATES_ENV, "1")
    state = np.linspace(-0.6, 0.6, 8).astype(np.float32)
    ckpt = request.getfixturevalue(f"tiny_{model}_ckpt")
    openpi = request.getfixturevalue(f"tiny_{model}_openpi_ckpt")
    ref = load_model(ckpt, model=model, hardware=hw, cache_dir=tmp_path / "torch")
    m = load_model(openpi, model=model, framework="jax", hardware=hw, cache_dir=tmp_path / "jax")
    assert type(m).__name__ == MODELS[model] + HARDWARE[hw]
    assert (m.model, m.framework, m.hardware) == (model, "jax", hw)
    assert m.weights.keys() == ref.weights.keys()
    for name, t in ref.weights.items():
        assert torch.equal(m.weights[name].view(torch.uint8), t.view(torch.uint8)), name
    ref.predict(camera_images[:2], state, prompt=PROMPT, seed=0)  # calibrates on this frame
    m.scales.scales.copy_(ref.scales.scales)
    m.calibrated = True
    for views in (1, 2, 3):
        got = m.predict(camera_images[:views], state, prompt=PROMPT, seed=views)
        want = ref.predict(camera_images[:views], state, prompt=PROMPT, seed=views)
        np.testing.assert_array_equal(got.actions_normalized, want.actions_normalized)
        np.testing.assert_array_equal(got.actions, want.actions)
    again = load_model(openpi, model=model, framework="jax", hardware=hw,
                       cache_dir=tmp_path / "jax")  # second load: weights from the cache
    assert all(torch.equal(again.weights[k].view(torch.uint8), v.view(torch.uint8))
               for k, v in m.weights.items())
