"""Invariances the spec guarantees, and the KV-cache decomposition vs one joint forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import flash_rt
from flash_rt.models.common.functional import attention, positions_from_mask, prefix_attention_mask

PROMPT = "pick up the red block"
STATE = np.array([0.1, -0.4, 0.3, 0.9, -1.2, 0.0, 0.5, 0.02], dtype=np.float32)


@pytest.fixture(params=["pi05", "pi0"])
def ckpt(request, tiny_pi05_ckpt, tiny_pi0_ckpt):
    return request.param, {"pi05": tiny_pi05_ckpt, "pi0": tiny_pi0_ckpt}[request.param]


def test_dropping_a_masked_view_is_exact(ckpt, camera_images):
    model, path = ckpt
    three = flash_rt.load_model(path, model=model, hardware="cpu", num_views=3)
    two = flash_rt.load_model(path, model=model, hardware="cpu", num_views=2)
    a = three.predict([camera_images[0], None, camera_images[2]], STATE, PROMPT, seed=5)
    b = two.predict([camera_images[0], camera_images[2]], STATE, PROMPT, seed=5)
    assert np.abs(a.actions_normalized - b.actions_normalized).max() <= 1e-5
    # the masked view really was ignored, and a present view really matters
    c = three.predict([camera_images[0], camera_images[1], camera_images[2]], STATE, PROMPT,
                      seed=5)
    assert np.abs(a.actions_normalized - c.actions_normalized).max() > 1e-4


def test_trailing_pad_tokens_do_not_matter(ckpt, camera_images):
    model, path = ckpt
    long = flash_rt.load_model(path, model=model, hardware="cpu", num_views=2)
    short = flash_rt.load_model(path, model=model, hardware="cpu", num_views=2,
                                max_token_len=60)
    a = long.predict(camera_images[:2], STATE, PROMPT, seed=9)
    b = short.predict(camera_images[:2], STATE, PROMPT, seed=9)
    assert np.abs(a.actions_normalized - b.actions_normalized).max() <= 1e-5


def test_noise_determinism(ckpt, camera_images):
    model, path = ckpt
    p = flash_rt.load_model(path, model=model, hardware="cpu", num_views=2)
    a = p.predict(camera_images[:2], STATE, PROMPT, seed=1)
    b = p.predict(camera_images[:2], STATE, PROMPT, seed=1)
    c = p.predict(camera_images[:2], STATE, PROMPT, seed=2)
    np.testing.assert_array_equal(a.actions, b.actions)
    assert np.abs(a.actions - c.actions).max() > 1e-3
    noise = np.random.default_rng(0).normal(size=(p.config.horizon, 32)).astype(np.float32)
    d = p.predict(camera_images[:2], STATE, PROMPT, noise=noise)
    e = p.predict(camera_images[:2], STATE, PROMPT, noise=noise)
    np.testing.assert_array_equal(d.actions, e.actions)
    assert d.seed is None and a.seed == 1


def test_prompt_and_state_change_the_actions(ckpt, camera_images):
    model, path = ckpt
    p = flash_rt.load_model(path, model=model, hardware="cpu", num_views=2)
    a = p.predict(camera_images[:2], STATE, PROMPT, seed=1).actions
    b = p.predict(camera_images[:2], STATE, "open the drawer", seed=1).actions
    c = p.predict(camera_images[:2], STATE * -1, PROMPT, seed=1).actions
    assert np.abs(a - b).max() > 1e-4 and np.abs(a - c).max() > 1e-4


def _joint_velocity(ref, obs, x_t, t):
    """Both towers in one attention per layer over [prefix; suffix] (no KV cache)."""
    cfg, theta = ref.cfg, ref.cfg.rope_theta
    lm, ex = ref._lm, ref._expert
    hp, pmask = ref.embed_prefix(obs.pixels, obs.view_mask, obs.tokens, obs.token_mask)
    suffix = ref.embed_suffix(x_t, t, obs.state)
    hs, cond = suffix.tokens, suffix.cond
    p, s = hp.shape[1], hs.shape[1]
    input_mask = torch.cat([pmask, torch.ones(1, s, dtype=torch.bool)], 1)
    ar = torch.cat([torch.zeros(1, p, dtype=torch.bool), suffix.ar_mask[None]], 1)
    mask = prefix_attention_mask(input_mask, ar)
    pos = positions_from_mask(input_mask)
    for lp, le in zip(lm.layers, ex.layers):
        np_, _ = lp.input_layernorm(hp)
        ns, gs = le.input_layernorm(hs, cond)
        qp, kp, vp = lp.self_attn.qkv(np_, pos[:, :p], theta)
        qs, ks, vs = le.self_attn.qkv(ns, pos[:, p:], theta)
        o = attention(torch.cat([qp, qs], 1), torch.cat([kp, ks], 1), torch.cat([vp, vs], 1),
                      mask)
        ys = le.self_attn.o_proj(o[:, p:])
        hp = hp + lp.self_attn.o_proj(o[:, :p])
        hs = hs + (ys if gs is None else gs * ys)
        np_, _ = lp.post_attention_layernorm(hp)
        ns, gs = le.post_attention_layernorm(hs, cond)
        hp = hp + lp.mlp(np_)
        ys = le.mlp(ns)
        hs = hs + (ys if gs is None else gs * ys)
    out, _ = ex.norm(hs, cond)
    return ref.project_actions(out)


def test_kv_cache_equals_joint_attention(ckpt, camera_images):
    model, path = ckpt
    p = flash_rt.load_model(path, model=model, hardware="cpu", num_views=3)
    obs = p.processor.prepare([camera_images[0], None, camera_images[1]], STATE, PROMPT)
    ref = p.reference
    x_t = torch.randn(1, p.config.horizon, p.config.action_dim)
    t = torch.tensor([0.7])
    with torch.no_grad():
        cache = ref.encode_prefix(obs.pixels, obs.view_mask, obs.tokens, obs.token_mask)
        cached = ref.velocity(x_t, t, cache, obs.state)
        joint = _joint_velocity(ref, obs, x_t, t)
    assert torch.isfinite(cached).all()
    torch.testing.assert_close(cached, joint, rtol=1e-4, atol=1e-5)
