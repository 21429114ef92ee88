"""The Pi0 GPU pipeline's own code (weight spec, staging, stage functions, calibration
twin) run on the CPU through an emulation of the kernel bindings, against the Pi0 FP32
reference with the same weights, observation and noise.

On top of what the Pi0.5 emulation checks (the shared SigLIP / prefix stages), this covers
Pi0's suffix: the folded action-time MLP and its per-step bias, the state token's pass
(its K/V row checked against the reference's state token directly: the state is one key
among hundreds for the actions, so the chunk barely shows it), the actions' K/V placement
after it, and the FP8 scales of the state pass.

FP8 thresholds: with random weights Pi0's chunk is ~10x more sensitive to FP8 rounding
than Pi0.5's (tiny: chunk 0.9987 vs 0.9999, the same with dynamic per-tensor scales, so
not a calibration effect; with only the prefix LM in FP8 0.99970 vs 0.99999). The bf16
mode, exact up to bf16 rounding, is held to 1e-4.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flash_rt.configs import load_config
from flash_rt.core.checkpoint import expected_layout
from flash_rt.core.weight_spec import dequantize
from flash_rt.frontends.torch._paligemma_engine import PaliGemmaEngine
from flash_rt.frontends.torch._pi0_spec import build_spec
from flash_rt.models.common.functional import flow_timesteps
from flash_rt.models.common.paligemma_pipeline import (MEGAKERNEL, SEQUENCE, denoise,
                                                      prefix_forward, siglip_forward)
from flash_rt.models.pi0.pipeline_common import STATE_SCALES, decoder_step, state_forward
from flash_rt.models.pi0.pipeline_hopper import PIPELINE as HOPPER
from flash_rt.models.pi0.pipeline_thor import PIPELINE as THOR
from flash_rt.models.pi05.pipeline_hopper import PIPELINE as PI05_HOPPER

from .compare import cosine, flow_cosine
from .emulated_engine import PROMPT, Emulated
from .emulated_kernels import EmulatedKernels

CHUNK, FLOW, KV = 0.998, 0.995, 0.99  # FP8 (see the module docstring)


@pytest.fixture
def state():
    return np.linspace(-0.5, 0.5, 8).astype(np.float32)


@pytest.mark.parametrize("preset", ["tiny", "small", "full"])
def test_spec_covers_the_checkpoint_layout(preset):
    cfg = load_config("pi0", preset)
    build_spec(cfg).check_layout(expected_layout(cfg))


def test_folded_weights_match_the_reference(tiny_pi0_ckpt, monkeypatch):
    em = Emulated(tiny_pi0_ckpt, THOR, monkeypatch)
    ref, w = em.ref.reference, em.weights
    expert = ref.paligemma_with_expert.gemma_expert.model
    layer = expert.layers[1]
    want = torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                      layer.self_attn.v_proj.weight]) * (1 + layer.input_layernorm.weight)
    assert cosine(dequantize(w, "ex.1.qkv"), want) > 0.999
    assert w["ex.1.qkv.w"].dtype == torch.float8_e4m3fn
    assert "ex.1.down.w" in w and "lm.1.o.w" not in w  # every expert layer; prefix K/V only
    # final norm folded into action_out
    out = ref.action_out_proj.weight * (1 + expert.norm.weight)
    assert torch.allclose(w["act_out.w"].float(), out, rtol=1e-2, atol=1e-3)
    # the folded action-time GEMM + step k's bias row = the reference's action_time_mlp_in
    x = torch.randn(5, em.cfg.action_dim)
    for k, t in enumerate(flow_timesteps(em.cfg.num_steps)):
        emb = ref.time_embedding(torch.tensor([t]))
        ref_in = ref.action_time_mlp_in(torch.cat([ref.action_in_proj(x), emb.expand(5, -1)], -1))
        got = x @ w["act_time_in.w"].float().T + w["act_time.bias"][k].float()
        assert torch.allclose(got, ref_in, rtol=2e-2, atol=2e-2), k
    assert w["act_time.bias"].shape == (em.cfg.num_steps, em.cfg.expert.width)


def attention_calls(em, gemm: bool):
    """Attention launches of one calibration + one timed run: the prefix (all but its last
    layer), the actions (every layer, every step) and the state token (all but its last
    layer: that one only writes K/V), through the GEMM path or the flash kernels."""
    depth, steps = em.cfg.expert.depth, em.cfg.num_steps
    encoder, decoder, state = (depth - 1) * 2, depth * steps * 2, (depth - 1) * 2
    if gemm:
        return {"attention_mqa_gemm": encoder + decoder + state}
    return {"attention_prefix": encoder, "attention_decoder": decoder + state}


def assert_matches_reference(em, images, state, chunk=CHUNK, flow=FLOW, kv=KV):
    """Calibrate on one frame, then compare another seed's chunk with the reference."""
    em.calibrate([(images, state, 11)])
    got = em.run(images, state, seed=5)
    want = em.reference(images, state, seed=5)
    stats = {"chunk": cosine(got, want), "flow": flow_cosine(got, want, em.noise),
             "prefix_kv": em.kv_cosine(images, state),
             "state_kv": em.state_kv_cosine(images, state)}
    assert (stats["chunk"] > chunk and stats["flow"] > flow and stats["prefix_kv"] > kv and
            stats["state_kv"] > kv), stats
    return got


# each GPU's pipeline with its frontend's staging (Hopper: copies into device twins, Thor:
# zero-copy), as pi0_hopper.py / pi0_thor.py pair them
HW = [(HOPPER, "device"), (THOR, "mapped")]


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("pipeline, staging", HW, ids=["hopper", "thor"])
def test_emulated_fast_path_matches_the_reference(tiny_pi0_ckpt, camera_images, state,
                                                  monkeypatch, views, pipeline, staging):
    em = Emulated(tiny_pi0_ckpt, pipeline, monkeypatch, staging=staging)
    gemm = pipeline is HOPPER
    assert_matches_reference(em, camera_images[:views], state)
    want = attention_calls(em, gemm)
    assert {k: em.k.calls.get(k, 0) for k in want} == want
    others = {"attention_mqa_gemm", "attention_decoder", "attention_prefix"} - set(want)
    assert not others & set(em.k.calls)
    assert em.k.calls["silu_bf16"] == 2 * em.cfg.num_steps


@pytest.mark.parametrize("views", [1, 3])
@pytest.mark.parametrize("pipeline, staging, expert, path",
                         [(HOPPER, "device", "", MEGAKERNEL),
                          (HOPPER, "device", "sequence", SEQUENCE),
                          (THOR, "mapped", "", SEQUENCE)],
                         ids=["hopper", "hopper-sequence", "thor"])
def test_emulated_gemma_head_shape_matches_the_reference(small_pi0_ckpt, camera_images, state,
                                                         monkeypatch, views, pipeline, staging,
                                                         expert, path):
    # Gemma's head shape (8 heads over one KV head of 256): the state token's attention is
    # 8 packed rows. Hopper runs Pi0's expert as the persistent kernel by default (its
    # contract emulated), once per denoising step, through the engine's own wiring (keys
    # through actions_start), and the state token's pass as one more launch of its one-row
    # schedule (keys through valid_len, its last layer stopping after QKV);
    # FLASH_RT_EXPERT=sequence and Thor run the kernel sequence
    if expert:
        monkeypatch.setenv("FLASH_RT_EXPERT", expert)
    em = Emulated(small_pi0_ckpt, pipeline, monkeypatch, staging=staging)
    assert_matches_reference(em, camera_images[:views], state)
    assert em.engine.expert_path == path
    assert em.k.calls.get("expert_megakernel", 0) == (em.cfg.num_steps + 1
                                                      if path == MEGAKERNEL else 0)
    if path == MEGAKERNEL:  # Pi0's action embedding is its time MLP: only the output folds
        assert (em.engine.ctx.expert.folds_in, em.engine.ctx.expert.folds_out) == (False, True)


def test_state_pass_knob_keeps_it_on_the_sequence(small_pi0_ckpt, camera_images, state,
                                                  monkeypatch):
    # FLASH_RT_PI0_STATE_PASS=sequence (the A/B of the state pass): the steps stay on the
    # kernel, the state token's pass runs as launches again; a typo is refused
    monkeypatch.setenv("FLASH_RT_PI0_STATE_PASS", "sequence")
    em = Emulated(small_pi0_ckpt, HOPPER, monkeypatch, staging="device")
    assert_matches_reference(em, camera_images[:1], state)
    assert em.engine.ctx.expert.state_pass is None
    assert em.k.calls["expert_megakernel"] == em.cfg.num_steps
    monkeypatch.setenv("FLASH_RT_PI0_STATE_PASS", "kernel")
    with pytest.raises(ValueError, match="FLASH_RT_PI0_STATE_PASS='kernel'"):
        Emulated(small_pi0_ckpt, HOPPER, monkeypatch, staging="device")


def test_bf16_mode_matches_the_reference_to_rounding(tiny_pi0_ckpt, camera_images, state,
                                                     monkeypatch):
    """Without FP8 only bf16 rounding separates the pipeline from the reference, so the
    dataflow (folds, state pass, masks, positions) is held tight; the state's own effect on
    the chunk (under 1 % of the flow here, so bf16 rounding blurs it) points the same way."""
    em = Emulated(tiny_pi0_ckpt, THOR, monkeypatch, precision="bf16")
    images = camera_images[:2]
    got = assert_matches_reference(em, images, state, chunk=0.99995, flow=0.9999, kv=0.9999)
    other = state + 3
    got_other = em.run(images, other, seed=5)
    want, want_other = em.reference(images, state, 5), em.reference(images, other, 5)
    assert cosine(got - got_other, want - want_other) > 0.8


def test_attention_key_ranges_of_the_state_and_the_actions(tiny_pi0_ckpt, camera_images, state,
                                                           monkeypatch):
    """Large values written into chosen cache rows between the stages show which rows each
    suffix token attends to: the state token not the action rows after it (they hold the
    previous inference's K/V when it runs), the actions the state row, and nothing the
    first row past the actions."""
    em = Emulated(tiny_pi0_ckpt, THOR, monkeypatch, precision="bf16")
    raw = em.ref.processor.prepare_raw(camera_images[:2], state, prompt=PROMPT)
    key = em.staging.write(raw, em.ref.make_noise(None, 4)[0])
    row = int(em.staging.host["valid_len"][0])  # the state token's cache row
    caches, d = (em.engine.acts.t["k_cache"], em.engine.acts.t["v_cache"]), em.engine.dims

    def run(before_state=(), before_actions=()):
        ctx = em.engine.context(em.staging.pointers(key))
        em.staging.copy_in(key, em.engine.x)
        siglip_forward(ctx), prefix_forward(ctx)
        for cache in caches:
            cache[:, before_state] += 50.0
        state_forward(ctx)
        state_kv = [cache[:, row].clone() for cache in caches]
        for cache in caches:
            cache[:, before_actions] += 50.0
        denoise(ctx, decoder_step)
        return em.engine.x.numpy().copy(), state_kv

    base, base_kv = run()
    after_state = slice(row + 1, row + d.suffix_len)
    _, kv = run(before_state=after_state)
    assert all(torch.equal(a, b) for a, b in zip(kv, base_kv))
    assert np.array_equal(run(before_actions=row + d.suffix_len)[0], base)
    assert cosine(run(before_actions=row)[0], base) < 0.99


def test_state_row_matches_the_reference_state_token(tiny_pi0_ckpt, camera_images, state,
                                                     monkeypatch):
    em = Emulated(tiny_pi0_ckpt, THOR, monkeypatch, precision="bf16")
    images = [camera_images[0], None, camera_images[2]]
    em.run(images, state * 2, seed=1)
    em.run(images, state, seed=2)
    good = em.state_kv_cosine(images, state)
    assert good > 0.9999, good
    # guard: a wrong device-side actions_start (the state's own row) lets the actions
    # overwrite the state token's K/V, which the check must see
    em.staging.host["valid_len"][1] = em.staging.host["valid_len"][0]
    em.rerun(em.staging.image_key(em.ref.processor.prepare_raw(images, state, prompt=PROMPT)))
    assert em.state_kv_cosine(images, state) < good - 0.01


def test_missing_view_and_short_prompt_use_device_side_masks(tiny_pi0_ckpt, camera_images,
                                                            state, monkeypatch):
    em = Emulated(tiny_pi0_ckpt, THOR, monkeypatch)
    assert_matches_reference(em, [camera_images[0], None, camera_images[2]], state)


def test_calibration_covers_the_state_pass(tiny_pi0_ckpt, camera_images, state, monkeypatch):
    em = Emulated(tiny_pi0_ckpt, HOPPER, monkeypatch, horizon=5, num_steps=3)
    s, depth = em.engine.scales, em.cfg.expert.depth
    st = [n for n in s.names if n.startswith(STATE_SCALES.format(i=""))]
    assert len(st) == 4 * (depth - 1) + 1  # the last layer only has its QKV input
    assert len(s.names) == len(set(s.names))
    em.calibrate([(camera_images[:2], state, 1)])
    assert torch.all(s.scales > 0) and torch.all(s.scales < 1.0)
    got = em.run(camera_images[:2], state, seed=3)
    assert flow_cosine(got, em.reference(camera_images[:2], state, seed=3), em.noise) > FLOW


def test_uncalibrated_scales_are_visibly_wrong(tiny_pi0_ckpt, camera_images, state,
                                               monkeypatch):
    """Guards the thresholds: scales far too small saturate FP8 and the chunk drifts."""
    em = Emulated(tiny_pi0_ckpt, HOPPER, monkeypatch)
    em.engine.scales.scales.fill_(1e-3)
    got = em.run(camera_images[:2], state, seed=3)
    assert flow_cosine(got, em.reference(camera_images[:2], state, seed=3), em.noise) < 0.99


def test_megakernel_request_names_why_this_config_cannot(tiny_pi0_ckpt, monkeypatch):
    # Pi0 has a kernel instance (test_expert_schedule: its contract against this sequence);
    # the tiny preset's head_dim is outside the kernel's shapes, and the error says so
    monkeypatch.setenv("FLASH_RT_EXPERT", "megakernel")
    with pytest.raises(ValueError, match="FLASH_RT_EXPERT=megakernel: .*head_dim 256"):
        Emulated(tiny_pi0_ckpt, HOPPER, monkeypatch)


def test_a_pipeline_refuses_another_models_config(tiny_pi0_ckpt, monkeypatch):
    em = Emulated(tiny_pi0_ckpt, THOR, monkeypatch)
    with pytest.raises(ValueError, match="a pi05 pipeline cannot run a pi0 config"):
        PaliGemmaEngine(em.cfg, em.weights, PI05_HOPPER, EmulatedKernels(), "cpu", 0)
