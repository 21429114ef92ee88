"""GR00T N1.7 through the public API: registry, load_model, predict, attention sites."""
from __future__ import annotations

import numpy as np
import pytest

import flash_rt
from flash_rt.configs import load_config
from flash_rt.hardware import registered
from flash_rt.hardware.attention import DIT_CROSS, DIT_SELF, LLM, VISION, VL_SELF
from flash_rt.models.groot.attention_spec import attention_spec


@pytest.fixture(scope="module")
def policy(tiny_groot_ckpt):
    return flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu")


@pytest.fixture
def frames(camera_images):
    return camera_images[:2]


def test_registered_cpu_frontend(tiny_groot_ckpt, policy):
    assert ("groot", "torch", "cpu") in registered()
    assert type(policy).__name__ == "GrootTorchFrontendCpu"
    # hardware="auto" falls back to the FP32 reference: no GPU path for GR00T yet
    auto = flash_rt.load_model(tiny_groot_ckpt, model="groot")
    assert type(auto).__name__ == "GrootTorchFrontendCpu" and auto.hardware == "cpu"


def test_predict_shapes_units_and_determinism(policy, frames):
    spec = policy.embodiment
    state = np.linspace(-0.5, 0.5, spec.state_dims).astype(np.float32)
    r1 = policy.predict(frames, state, prompt="pick up the red block", seed=3)
    r2 = policy.predict(frames, state, prompt="pick up the red block", seed=3)
    cfg = policy.config
    assert r1.actions.shape == (spec.action_horizon, spec.action_dims)
    assert r1.actions_normalized.shape == (cfg.action_horizon, cfg.max_action_dim)
    np.testing.assert_array_equal(r1.actions, r2.actions)
    assert r1.seed == 3 and r1.latency_ms > 0
    np.testing.assert_allclose(r1.actions, spec.unnormalize_actions(
        r1.actions_normalized[:spec.action_horizon].astype(np.float64)), rtol=1e-6, atol=1e-6)
    other = policy.predict(frames, state, prompt="pick up the red block", seed=4)
    assert not np.array_equal(other.actions_normalized, r1.actions_normalized)
    assert policy.get_latency_stats()["count"] >= 3


def test_token_ids_equal_the_prompt(policy, frames):
    state = np.zeros(policy.embodiment.state_dims, np.float32)
    ids = policy.processor.prompt_ids("open the drawer")
    a = policy.predict(frames, state, prompt="open the drawer", seed=0)
    b = policy.predict(frames, state, token_ids=ids, seed=0)
    np.testing.assert_array_equal(a.actions, b.actions)


def test_horizon_and_action_dims_slice_the_chunk(tiny_groot_ckpt, policy, frames):
    small = flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu", horizon=2,
                                action_dims=3)
    state = np.zeros(policy.embodiment.state_dims, np.float32)
    a = policy.predict(frames, state, prompt="go", seed=1)
    b = small.predict(frames, state, prompt="go", seed=1)
    np.testing.assert_array_equal(b.actions, a.actions[:2, :3])


def test_input_errors(tiny_groot_ckpt, policy, frames):
    state = np.zeros(policy.embodiment.state_dims, np.float32)
    with pytest.raises(ValueError, match="takes exactly 2 views"):
        policy.predict(frames[:1], state, prompt="go")
    with pytest.raises(ValueError, match="takes exactly 2 views"):
        policy.predict([frames[0], None], state, prompt="go")
    with pytest.raises(ValueError, match="needs the robot state"):
        policy.predict(frames, None, prompt="go")
    with pytest.raises(ValueError, match="unknown embodiment"):
        flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu", embodiment="gr1")
    with pytest.raises(ValueError, match="takes 2 views"):
        flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu", num_views=3)


def test_pi_models_refuse_an_embodiment(tiny_pi05_ckpt):
    with pytest.raises(ValueError, match="embodiment= applies to GR00T"):
        flash_rt.load_model(tiny_pi05_ckpt, model="pi05", hardware="cpu", embodiment="x")


def test_groot_refuses_the_openpi_options(tiny_groot_ckpt):
    """asset_id and framework="jax" are openpi's (Pi0/Pi0.5); GR00T's norm stats come with
    its embodiment, and it has no openpi checkpoint format."""
    with pytest.raises(ValueError, match="asset_id picks the norm stats of an openpi "
                                         "checkpoint.*choose it with embodiment="):
        flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu", asset_id="x")
    with pytest.raises(ValueError, match="no frontend for model='groot' framework='jax'"):
        flash_rt.load_model(tiny_groot_ckpt, model="groot", framework="jax", hardware="cpu")


def test_num_steps_override(tiny_groot_ckpt, frames):
    p = flash_rt.load_model(tiny_groot_ckpt, model="groot", hardware="cpu", num_steps=2)
    assert p.config.num_inference_timesteps == 2


def test_attention_sites_from_the_config():
    cfg = load_config("groot", "full")
    spec = attention_spec(cfg, num_views=2, max_text_tokens=64)
    vision, llm = spec.site(VISION), spec.site(LLM)
    assert (vision.layer_count, vision.num_heads, vision.head_dim, vision.max_q_len,
            vision.batch) == (24, 16, 64, 256, 2)
    assert (llm.layer_count, llm.num_heads, llm.num_kv_heads, llm.head_dim,
            llm.max_kv_len) == (16, 16, 8, 128, 2 * 64 + 64)
    ds, dc = spec.site(DIT_SELF), spec.site(DIT_CROSS)
    assert ds.layer_count == dc.layer_count == 16
    assert (dc.num_heads, dc.head_dim, dc.max_q_len, dc.max_kv_len) == (32, 48, 41, 192)
    assert spec.site(VL_SELF).layer_count == 4
