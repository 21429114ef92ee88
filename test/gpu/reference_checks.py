"""Comparing a GPU frontend's chunk with the FP32 reference's on the same observation and
noise (shared by the Pi0.5 and Pi0 frontend tests)."""
from __future__ import annotations

import numpy as np

from pipeline.compare import cosine, flow_cosine, max_abs, prefix_kv_cosine, state_kv_cosine


def check_against_reference(m, reference, images, state, prompt, seed, *, chunk=0.999,
                            flow=0.99, kv=0.99, state_kv=None):
    """Chunk, flow and prefix-K/V cosines (and, for Pi0, the state token's K/V row when
    ``state_kv`` is a threshold) against the reference; returns (result, stats)."""
    got = m.predict(images, state, prompt=prompt, seed=seed)
    want = reference.predict(images, state, prompt=prompt, seed=seed)
    noise = m.make_noise(None, seed)[0][0].numpy()
    obs = reference.processor.prepare(images, state, prompt=prompt)
    caches = m.engine.acts.t["k_cache"], m.engine.acts.t["v_cache"]
    stats = {"chunk": cosine(got.actions_normalized, want.actions_normalized),
             "flow": flow_cosine(got.actions_normalized, want.actions_normalized, noise),
             "kv": prefix_kv_cosine(*caches, reference.reference, obs),
             "max_abs": max_abs(got.actions_normalized, want.actions_normalized)}
    ok = stats["chunk"] >= chunk and stats["flow"] >= flow and stats["kv"] >= kv
    if state_kv is not None:
        stats["state_kv"] = state_kv_cosine(*caches, reference.reference, obs)
        ok = ok and stats["state_kv"] >= state_kv
    assert ok, stats
    # robot-unit actions are the GPU-side affine un-normalisation of the same chunk
    np.testing.assert_allclose(got.actions, reference.processor.postprocess(
        got.actions_normalized), rtol=1e-5, atol=1e-5)
    return got, stats
