"""The Pi0.5 GPU pipeline's own code (weight spec, staging, stage functions, calibration
twin) run on the CPU through an emulation of the kernel bindings, against the FP32
reference with the same weights, observation and noise.

This is what CPU CI can check of the fast path: fused/folded weights, the per-step adaRMS
tables, the prefix row layout with masks and the device-side valid length, the action
expert's K/V placement and positions, static vs calibrated scales. The real kernels are
checked against the same reference on the GPU (test/gpu).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flash_rt.core.checkpoint import expected_layout, open_checkpoint, plan_keys
from flash_rt.core.weight_spec import dequantize
from flash_rt.frontends.torch._pi05_spec import adarms_tables, build_spec
from flash_rt.hardware.hopper.tuning import TUNING as HOPPER_TUNING
from flash_rt.models.pi05.pipeline_hopper import PIPELINE as HOPPER
from flash_rt.models.pi05.pipeline_thor import PIPELINE as THOR

from .compare import cosine, flow_cosine
from .emulated_engine import PROMPT, Emulated


@pytest.fixture
def state():
    return np.linspace(-0.5, 0.5, 8).astype(np.float32)


def test_spec_covers_the_checkpoint_layout():
    from flash_rt.configs import load_config
    for preset in ("tiny", "full"):
        cfg = load_config("pi05", preset)
        build_spec(cfg).check_layout(expected_layout(cfg))


def test_spec_rejects_a_layout_it_does_not_cover():
    from flash_rt.configs import load_config
    cfg = load_config("pi05", "tiny")
    layout = dict(expected_layout(cfg))
    layout["paligemma_with_expert.new_block.weight"] = (4,)
    with pytest.raises(ValueError, match="ignores keys"):
        build_spec(cfg).check_layout(layout)


def test_fused_and_folded_weights_match_the_checkpoint(tiny_pi05_ckpt, monkeypatch):
    em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
    ref = em.ref.reference
    layer = ref.paligemma_with_expert.paligemma.model.language_model.layers[1]
    want = torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                      layer.self_attn.v_proj.weight]) * (1 + layer.input_layernorm.weight)
    got = dequantize(em.weights, "lm.1.qkv")
    assert cosine(got, want) > 0.999
    assert em.weights["lm.1.qkv.w"].dtype == torch.float8_e4m3fn
    # gate/up: rows interleaved 8 gate, 8 up, ... (the layout every GeGLU kernel reads;
    # layer 0: the last one has no MLP)
    layer = ref.paligemma_with_expert.paligemma.model.language_model.layers[0]
    g, u = layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight
    F = g.shape[0]
    want = torch.stack([g.reshape(F // 8, 8, -1), u.reshape(F // 8, 8, -1)], 1).reshape(2 * F, -1)
    assert cosine(dequantize(em.weights, "lm.0.gate_up"),
                  want * (1 + layer.post_attention_layernorm.weight)) > 0.999
    # per-step adaRMS table row = the reference's modulation at that step's time
    t = torch.tensor([1.0 - 3 / em.cfg.num_steps])
    cond = ref.adarms_condition(t)
    expert = ref.paligemma_with_expert.gemma_expert.model
    mod = expert.layers[1].post_attention_layernorm.dense(cond)[0]
    assert torch.allclose(em.weights["ex.mod"][3, 3], mod, atol=1e-5)
    assert em.weights["ex.mod"].shape == (em.cfg.num_steps, 2 * em.cfg.expert.depth + 1,
                                          3 * em.cfg.expert.width)
    assert "lm.1.o.w" not in em.weights  # the last prefix layer only makes K/V


def assert_matches_reference(em, images, state):
    """Calibrate on one frame, then compare another seed's chunk with the reference."""
    em.calibrate([(images, state, 11)])
    got = em.run(images, state, seed=5)
    want = em.reference(images, state, seed=5)
    assert cosine(got, want) > 0.999, cosine(got, want)
    assert flow_cosine(got, want, em.noise) > 0.995, flow_cosine(got, want, em.noise)
    assert em.kv_cosine(images, state) > 0.99


def attention_calls(em, gemm_sites):
    """Attention launches one calibration + one timed run make, by kernel, when
    ``gemm_sites`` go through attention_mqa_gemm and the other cached sites through the
    flash kernels."""
    runs = {"decoder": em.cfg.expert.depth * em.cfg.num_steps * (1 + 1),
            "encoder": (em.cfg.prefix.depth - 1) * (1 + 1)}
    flash = {"decoder": "attention_decoder", "encoder": "attention_prefix"}
    want: dict[str, int] = {}
    for site, n in runs.items():
        name = "attention_mqa_gemm" if site in gemm_sites else flash[site]
        want[name] = want.get(name, 0) + n
    return want


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("pipeline, gemm_sites", [(HOPPER, ("encoder", "decoder")), (THOR, ())],
                         ids=["hopper", "thor"])
def test_emulated_fast_path_matches_the_reference(tiny_pi05_ckpt, camera_images, state,
                                                  monkeypatch, views, pipeline, gemm_sites):
    # Hopper's backend runs both cached sites as GEMMs (keys rounded up to 16 rows, read
    # from the caches' tail padding); Thor keeps the flash kernels. Either way the attention
    # backend, not the stages, launches attention.
    em = Emulated(tiny_pi05_ckpt, pipeline, monkeypatch)
    images = camera_images[:views]
    assert_matches_reference(em, images, state)
    want = attention_calls(em, gemm_sites)
    assert {k: em.k.calls.get(k, 0) for k in want} == want
    assert not ({"attention_mqa_gemm", "attention_decoder", "attention_prefix"} - set(want)) \
        & set(em.k.calls)


@pytest.mark.parametrize("views", [1, 3])
@pytest.mark.parametrize("pipeline, expert", [(HOPPER, "sequence"), (HOPPER, "megakernel"),
                                              (THOR, "sequence")],
                         ids=["hopper", "hopper-megakernel", "thor"])
def test_emulated_gemma_head_shape_matches_the_reference(small_pi05_ckpt, camera_images, state,
                                                         monkeypatch, views, pipeline, expert):
    # Gemma's head shape (8 heads over one KV head of 256) at tiny widths: the attention
    # outputs (2048 wide) exceed every MLP hidden layer, so the FP8 / calibration scratch
    # must be sized by them too (it was sized by the MLPs and norms only, which the full
    # and tiny presets never exposed)
    # with FLASH_RT_EXPERT=megakernel the expert's layers run as the persistent kernel (its
    # contract emulated from its own tables and packed weights), once per denoising step
    monkeypatch.setenv("FLASH_RT_EXPERT", expert)
    em = Emulated(small_pi05_ckpt, pipeline, monkeypatch)
    assert em.engine.expert_path == expert
    assert_matches_reference(em, camera_images[:views], state)
    mk_steps = em.k.calls.get("expert_megakernel", 0)
    assert mk_steps == (em.cfg.num_steps if expert == "megakernel" else 0)


def test_folded_action_io_matches_the_launches_it_replaces(small_pi05_ckpt, camera_images,
                                                           state, monkeypatch):
    # a kernel module that folds the action I/O (FLASH_RT_MK_FOLD_IO builds; the emulation
    # does): per step the persistent kernel also makes dec_x from x_bf16 and ends with the
    # Euler update, so neither action GEMM nor the Euler kernel is launched per step; the
    # chunk is the unfolded one's to fp32 rounding (FLASH_RT_MK_FOLD_IO=0 on the same module)
    images = camera_images[:2]
    chunks, launches = {}, {}
    for fold in ("1", "0"):
        monkeypatch.setenv("FLASH_RT_MK_FOLD_IO", fold)
        em = Emulated(small_pi05_ckpt, HOPPER, monkeypatch)
        mk = em.engine.ctx.expert
        assert (mk.folds_in, mk.folds_out) == ((True, True) if fold == "1" else (False, False))
        em.calibrate([(images, state, 11)])
        before = dict(em.k.calls)
        chunks[fold] = em.run(images, state, seed=5)
        launches[fold] = {k: em.k.calls.get(k, 0) - before.get(k, 0)
                          for k in ("euler_step", "expert_megakernel")}
    steps = em.cfg.num_steps
    assert launches["1"] == {"euler_step": 1, "expert_megakernel": steps}  # the dt = 0 one
    assert launches["0"] == {"euler_step": 1 + steps, "expert_megakernel": steps}
    assert cosine(chunks["1"], chunks["0"]) > 0.99999
    assert np.abs(chunks["1"] - chunks["0"]).max() < 1e-2


@pytest.mark.parametrize("sites", [("decoder",), ("encoder", "decoder")])
def test_attention_override_selects_the_flash_kernels(tiny_pi05_ckpt, camera_images, state,
                                                      monkeypatch, sites):
    # FLASH_RT_{ENCODER,DECODER}_ATTN=flash (A/B knobs) route Hopper's cached sites back to
    # the flash kernels; the results stay the reference's.
    for site in sites:
        monkeypatch.setenv(f"FLASH_RT_{site.upper()}_ATTN", "flash")
    em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
    assert_matches_reference(em, camera_images[:2], state)
    want = attention_calls(em, {"encoder", "decoder"} - set(sites))
    assert {k: em.k.calls.get(k, 0) for k in want} == want


@pytest.mark.parametrize("cold", ["1", "0"])
def test_autotune_cycles_through_the_same_shape_weights(tiny_pi05_ckpt, camera_images, state,
                                                        monkeypatch, cold):
    # each shape is tuned once (its first call), timing the calls over every weight of that
    # shape (the other layers'), so the weights stream from HBM as in a forward pass
    monkeypatch.setenv("FLASH_RT_AUTOTUNE_COLD", cold)
    em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
    em.engine.gemm.tuning = True
    em.run(camera_images[:1], state, seed=3)
    lin = em.engine.ctx.lin
    tuned = em.k.autotune_cycles
    assert tuned  # one entry per distinct GEMM (shape, rows, epilogue)
    if cold == "0":
        assert not any(tuned)
        return
    for name in ("ex.{}.qkv", "lm.{}.qkv", "sig.{}.fc1"):
        depth = sum(name.format(i) in lin for i in range(64))
        others = {lin[name.format(i)].w for i in range(1, depth)}  # layer 0 is tuned
        same = {w.w for w in lin.values() if w.shape_key == lin[name.format(0)].shape_key}
        # every other layer's weight (and e.g. a projector of the same shape), nothing else
        assert others and any(others <= set(c) <= same for c in tuned), name


@pytest.mark.parametrize("pipeline, knob, max_k", [(HOPPER, None, 2048), (HOPPER, "64", 64),
                                                   (THOR, None, 0)],
                         ids=["hopper", "hopper-knob-64", "thor"])
def test_fast_accumulation_only_up_to_its_k(tiny_pi05_ckpt, camera_images, state, monkeypatch,
                                            pipeline, knob, max_k):
    # Hopper accumulates FP8 GEMMs with K <= 2048 the fast way; the long-K down projections
    # (and every GEMM on Thor / RTX) keep full-precision accumulation. The tiny model's K are
    # all <= 128, so the FLASH_RT_FAST_ACCUM_MAX_K=64 case shows both sides of the threshold.
    if knob:
        monkeypatch.setenv("FLASH_RT_FAST_ACCUM_MAX_K", knob)
    em = Emulated(tiny_pi05_ckpt, pipeline, monkeypatch)
    assert em.engine.gemm.fast_accum_max_k == max_k
    seen = {}
    real = em.k.gemm_fp8

    def spy(a, b, d, M, N, K, *args, fast_accum=False, **kw):
        seen.setdefault(K, set()).add(fast_accum)
        return real(a, b, d, M, N, K, *args, **kw)
    monkeypatch.setattr(em.k, "gemm_fp8", spy)
    em.run(camera_images[:1], state, seed=1)
    assert seen == {K: {K <= max_k} for K in seen}
    if knob:
        assert {True, False} <= set().union(*seen.values())


def test_fused_gate_up_geglu_replaces_the_gemm_and_geglu_launches(
        tiny_pi05_ckpt, camera_images, state, monkeypatch):
    # FLASH_RT_FUSED_GEGLU=1: every FP8 gate/up (K <= the fast-accumulation K) with its GeGLU
    # is one gemm_fp8_geglu launch writing the down projection's FP8 input; calibration
    # (the bf16 twin) keeps the separate launches; the chunk still matches the reference.
    # (The tiny expert runs as the kernel sequence: its MLPs take the fused GEMM too.)
    monkeypatch.setenv("FLASH_RT_FUSED_GEGLU", "1")
    em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
    em.calibrate([(camera_images[:2], state, 11)])
    assert em.k.calls.get("geglu_bf16")  # the twin's separate GeGLU (it records the amax)
    em.k.calls.clear()
    em.run(camera_images[:2], state, seed=5)
    cfg = em.cfg
    mlps = (cfg.prefix.depth - 1) + cfg.expert.depth * cfg.num_steps
    assert em.k.calls.get("gemm_fp8_geglu") == mlps
    assert "geglu_fp8" not in em.k.calls and "geglu_bf16" not in em.k.calls
    want = em.reference(camera_images[:2], state, seed=5)
    assert cosine(em.engine.x.numpy(), want) > 0.999
    monkeypatch.setenv("FLASH_RT_FUSED_GEGLU", "0")
    unfused = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
    unfused.calibrate([(camera_images[:2], state, 11)])
    assert cosine(unfused.run(camera_images[:2], state, seed=5), em.engine.x.numpy()) > 0.9999
    assert "gemm_fp8_geglu" not in unfused.k.calls


def test_fused_geglu_config_knob_reaches_the_kernel(tiny_pi05_ckpt, camera_images, state,
                                                    monkeypatch):
    # FLASH_RT_FUSED_GEGLU_CONFIG picks gemm_fp8_geglu's config (the packed-store A/B);
    # without it every launch takes the GPU tuning's (hopper/tuning.py)
    seen = {}
    for knob in ("2", None):
        if knob is None:
            monkeypatch.delenv("FLASH_RT_FUSED_GEGLU_CONFIG", raising=False)
        else:
            monkeypatch.setenv("FLASH_RT_FUSED_GEGLU_CONFIG", knob)
        monkeypatch.setenv("FLASH_RT_FUSED_GEGLU", "1")
        em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
        em.calibrate([(camera_images[:1], state, 11)])
        real, configs = em.k.gemm_fp8_geglu, set()

        def spy(*args, _real=real, _configs=configs):
            _configs.add(args[12])
            return _real(*args)
        monkeypatch.setattr(em.k, "gemm_fp8_geglu", spy)
        em.run(camera_images[:1], state, seed=5)
        seen[knob] = configs
    assert seen == {"2": {2}, None: {HOPPER_TUNING.fused_geglu_config}}
    assert HOPPER_TUNING.fused_geglu_config != 2  # (else the knob would go unseen)


def test_programmatic_launch_follows_the_pipeline_unless_the_knob_says(tiny_pi05_ckpt,
                                                                      monkeypatch):
    # The engine sets the kernel module's launch policy when it is built: the hardware
    # pipeline's `programmatic_launch`, FLASH_RT_PDL=1|0 over it
    import dataclasses
    seen = {}
    for pipeline, knob in ((HOPPER, None), (HOPPER, "1"),
                           (dataclasses.replace(HOPPER, programmatic_launch=True), None),
                           (dataclasses.replace(HOPPER, programmatic_launch=True), "0")):
        if knob is None:
            monkeypatch.delenv("FLASH_RT_PDL", raising=False)
        else:
            monkeypatch.setenv("FLASH_RT_PDL", knob)
        em = Emulated(tiny_pi05_ckpt, pipeline, monkeypatch)
        seen[(pipeline.programmatic_launch, knob)] = em.k.programmatic_launch
    assert seen == {(HOPPER.programmatic_launch, None): HOPPER.programmatic_launch,
                    (HOPPER.programmatic_launch, "1"): True, (True, None): True, (True, "0"): False}


def test_unknown_decoder_attention_is_rejected(tiny_pi05_ckpt, monkeypatch):
    monkeypatch.setenv("FLASH_RT_DECODER_ATTN", "fast")
    with pytest.raises(ValueError, match="unknown decoder attention"):
        Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)


def test_missing_view_and_short_prompt_use_device_side_masks(tiny_pi05_ckpt, camera_images,
                                                            state, monkeypatch):
    em = Emulated(tiny_pi05_ckpt, THOR, monkeypatch)
    images = [camera_images[0], None, camera_images[2]]
    em.calibrate([(images, state, 1)])
    got = em.run(images, state, seed=9)
    want = em.reference(images, state, seed=9)
    assert flow_cosine(got, want, em.noise) > 0.995
    good = em.kv_cosine(images, state)
    assert good > 0.99, good
    # guard: a wrong device-side valid length (last text tokens dropped) must show up
    em.staging.host["valid_len"][0] = em.engine.dims.image_rows + 2
    key = em.staging.image_key(em.ref.processor.prepare_raw(images, state, prompt=PROMPT))
    em.rerun(key)
    assert em.kv_cosine(images, state) < good - 0.01


def test_calibration_scales_follow_the_activations(tiny_pi05_ckpt, camera_images, state,
                                                   monkeypatch):
    em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch, horizon=5, num_steps=3)
    images = camera_images[:2]
    assert torch.all(em.engine.scales.scales == 1.0)  # uncalibrated
    em.calibrate([(images, state, 1), (images, state * 0.5, 2)])
    s = em.engine.scales
    assert torch.all(s.scales > 0) and torch.all(s.scales < 1.0)
    # per-step expert scales differ between steps (the time condition changes them)
    d = em.engine.dims
    step0 = s.scales[s.index["ex.0.0.gate_up"]]
    step2 = s.scales[s.index[f"ex.{d.steps - 1}.0.gate_up"]]
    assert step0 != step2
    got = em.run(images, state, seed=3)
    assert flow_cosine(got, em.reference(images, state, seed=3), em.noise) > 0.995


def test_uncalibrated_scales_are_visibly_wrong(tiny_pi05_ckpt, camera_images, state, monkeypatch):
    """Guards the test above: scales far too small saturate FP8 and the chunk drifts."""
    em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch)
    images = camera_images[:2]
    em.engine.scales.scales.fill_(1e-3)
    got = em.run(images, state, seed=3)
    assert flow_cosine(got, em.reference(images, state, seed=3), em.noise) < 0.99


def test_adarms_tables_shape(tiny_pi05_ckpt):
    bundle = open_checkpoint(tiny_pi05_ckpt, "pi05", num_steps=4)
    spec = build_spec(bundle.config)
    mod_item = [it for it in spec.items if it.name == "ex.mod"][0]
    plan = plan_keys(bundle.reader, expected_layout(bundle.config))
    t = {k: bundle.reader.get(plan.source[k]).float() for k in mod_item.inputs}
    assert adarms_tables(bundle.config, t).shape[0] == 4


def test_precision_modes_trade_fp8_for_accuracy(tiny_pi05_ckpt, camera_images, state,
                                                monkeypatch):
    """bf16 Linears skip activation quantisation; all-bf16 leaves only bf16 rounding."""
    images = camera_images[:2]
    flows = {}
    for precision in ("fp8-all", "fp8", "fp8-bf16-expert", "bf16"):
        em = Emulated(tiny_pi05_ckpt, HOPPER, monkeypatch, precision=precision)
        em.calibrate([(images, state, 1)])
        got = em.run(images, state, seed=6)
        flows[precision] = flow_cosine(got, em.reference(images, state, seed=6), em.noise)
        fp8 = {k for k, v in em.weights.items() if v.dtype == torch.float8_e4m3fn}
        assert (precision == "bf16") == (not fp8)
        assert any(k.startswith("sig.") for k in fp8) == (precision == "fp8-all")
        assert any(k.startswith("ex.") for k in fp8) == (precision in ("fp8-all", "fp8"))
    assert flows["bf16"] > 0.9999 and flows["bf16"] > flows["fp8-all"], flows
    assert flows["fp8-bf16-expert"] > flows["fp8-all"], flows


def test_unknown_precision_is_rejected():
    from flash_rt.configs import load_config
    with pytest.raises(ValueError, match="unknown precision"):
        build_spec(load_config("pi05", "tiny"), "int4")
