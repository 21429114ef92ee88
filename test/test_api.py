"""Public API: load_model, registry, predict outputs and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest

import flash_rt
from flash_rt.configs import MODELS
from flash_rt.hardware import _PIPELINE_MAP, frontend_class, registered, resolve_hardware

STATE = np.linspace(-0.5, 0.5, 8).astype(np.float32)


@pytest.fixture(scope="module")
def policy(tiny_pi05_ckpt):
    return flash_rt.load_model(tiny_pi05_ckpt, model="pi05", hardware="auto", num_views=2)


def test_registry_is_one_to_one_and_has_cpu_rows():
    targets = list(_PIPELINE_MAP.values())
    assert len(targets) == len(set(targets))
    assert _PIPELINE_MAP[("pi05", "torch", "cpu")][1] == "Pi05TorchFrontendCpu"
    assert _PIPELINE_MAP[("pi0", "torch", "cpu")][1] == "Pi0TorchFrontendCpu"
    for (model, fw, hw), (module, cls) in _PIPELINE_MAP.items():
        assert module == f"flash_rt.frontends.{fw}.{model}_{hw.split('_')[0]}"
        assert frontend_class(model, fw, hw).__name__ == cls


def test_unknown_combination_lists_valid_ones():
    with pytest.raises(ValueError, match=r"registered combinations: .*'pi05', 'jax', 'cpu'.*"
                                         r"'pi05', 'torch', 'cpu'"):
        frontend_class("pi05", "onnx", "cpu")


def test_jax_rows_mirror_the_torch_rows():
    """Every (Pi model, hardware) served from safetensors is served from openpi checkpoints
    too, by its own class wrapping exactly that torch frontend (GR00T has no openpi format)."""
    torch_rows = {(m, hw) for m, fw, hw in _PIPELINE_MAP if fw == "torch" and m in MODELS}
    assert {m for m, fw, hw in _PIPELINE_MAP if fw == "jax"} == set(MODELS)
    assert {(m, hw) for m, fw, hw in _PIPELINE_MAP if fw == "jax"} == torch_rows
    for model, hw in torch_rows:
        jax_cls, torch_cls = frontend_class(model, "jax", hw), frontend_class(model, "torch", hw)
        assert jax_cls.__name__ == torch_cls.__name__.replace("Torch", "Jax")
        assert jax_cls.__mro__[2] is torch_cls and jax_cls.framework == "jax"
        assert (jax_cls.model, jax_cls.hardware) == (torch_cls.model, torch_cls.hardware)


def test_auto_falls_back_to_cpu_without_gpu(monkeypatch, caplog):
    """No GPU: the reference, without a warning about a GPU or the kernel module (it used
    to say "a cpu GPU is visible but flash_rt_kernels is not built")."""
    import logging

    import torch
    from flash_rt import kernels

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(kernels, "available", lambda: False)
    with caplog.at_level(logging.DEBUG, logger="flash_rt.hardware"):
        for model in ("pi05", "pi0", "groot"):
            assert resolve_hardware(model, "torch", "auto") == "cpu"
    assert not caplog.records, caplog.text


def test_auto_needs_the_kernel_module_for_a_gpu_path(monkeypatch, caplog):
    import flash_rt.hardware as hw
    from flash_rt import kernels

    monkeypatch.setattr(hw, "detect_hardware", lambda: "hopper")
    monkeypatch.setattr(kernels, "available", lambda: True)
    assert resolve_hardware("pi05", "torch", "auto") == "hopper"
    assert resolve_hardware("pi0", "torch", "auto") == "hopper"
    assert resolve_hardware("pi0", "jax", "auto") == "hopper"  # openpi checkpoints too
    assert resolve_hardware("groot", "torch", "auto") == "cpu"  # no GR00T fast path yet
    monkeypatch.setattr(kernels, "available", lambda: False)
    assert resolve_hardware("pi05", "torch", "auto") == "cpu"
    assert "flash_rt_kernels is not built" in caplog.text


@pytest.mark.parametrize("model, prefix", [("pi05", "Pi05"), ("pi0", "Pi0")])
def test_gpu_frontends_are_registered_one_to_one(model, prefix):
    names = {hw: _PIPELINE_MAP[(model, "torch", hw)][1] for hw in ("hopper", "thor", "rtx_sm120")}
    assert names == {"hopper": f"{prefix}TorchFrontendHopper", "thor": f"{prefix}TorchFrontendThor",
                     "rtx_sm120": f"{prefix}TorchFrontendRtx"}
    classes = [frontend_class(model, "torch", hw) for hw in names]
    assert [c.__name__ for c in classes] == list(names.values())
    assert {c.model for c in classes} == {model} and len(set(_PIPELINE_MAP.values())) == \
        len(_PIPELINE_MAP)


def test_predict_outputs(policy, camera_images):
    r = policy.predict(camera_images[:2], STATE, prompt="pick up the red block", seed=3)
    cfg = policy.config
    assert r.actions.shape == (cfg.horizon, 8) and r.actions.dtype == np.float32
    assert r.actions_normalized.shape == (cfg.horizon, cfg.action_dim)
    assert np.isfinite(r.actions).all() and r.latency_ms > 0 and r.seed == 3
    assert set(r.timing_ms) == {"preprocess", "infer", "postprocess"}
    stats = policy.get_latency_stats()
    assert set(stats) == {"count", "mean", "p50", "p95", "p99", "max"} and stats["count"] >= 1


def test_action_dims_slices_the_robot_dims(tiny_pi05_ckpt, camera_images):
    p = flash_rt.load_model(tiny_pi05_ckpt, hardware="cpu", num_views=2, action_dims=3)
    full = flash_rt.load_model(tiny_pi05_ckpt, hardware="cpu", num_views=2)
    a = p.predict(camera_images[:2], STATE, prompt="x", seed=0).actions
    b = full.predict(camera_images[:2], STATE, prompt="x", seed=0).actions
    np.testing.assert_array_equal(a, b[:, :3])


def test_token_ids_path_matches_prompt_path(policy, camera_images):
    from flash_rt.processing import discretize_state, pi05_prompt

    norm = policy.processor.normalizer.normalize_state(STATE)
    ids = policy.processor.tokenizer.encode(pi05_prompt("stack cups", discretize_state(norm[:8])))
    a = policy.predict(camera_images[:2], STATE, prompt="stack cups", seed=4)
    b = policy.predict(camera_images[:2], token_ids=ids, seed=4)
    np.testing.assert_array_equal(a.actions, b.actions)


@pytest.mark.parametrize("images,err", [
    (lambda im: [im[0].astype(np.float32), im[1]], "uint8"),
    (lambda im: [im[0][..., 0], im[1]], "shape"),
    (lambda im: im[0], "list"),
    (lambda im: [im[0], im[1], im[2]], "view"),
    (lambda im: [None, None], "missing"),
])
def test_bad_images_are_clear_errors(policy, camera_images, images, err):
    with pytest.raises((ValueError, TypeError), match=err):
        policy.predict(images(camera_images), STATE, prompt="x")


def test_bad_state_prompt_and_noise(policy, camera_images):
    ims = camera_images[:2]
    bad = STATE.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.predict(ims, bad, prompt="x")
    with pytest.raises(ValueError, match="dims"):
        policy.predict(ims, STATE[:5], prompt="x")
    with pytest.raises(ValueError, match="max_token_len"):
        policy.predict(ims, STATE, prompt="pick up the red block " * 60)
    with pytest.raises(ValueError, match="exactly one"):
        policy.predict(ims, STATE)
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.predict(ims, STATE, prompt="x", noise=np.zeros((3, 32), np.float32))
    with pytest.raises(ValueError, match="vocab"):
        policy.predict(ims, token_ids=[2, 10**6])


def test_missing_norm_stats_and_tokenizer(tmp_path, tiny_pi05_ckpt, camera_images):
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(tiny_pi05_ckpt, d)
    (d / "tokenizer.model").unlink()
    p = flash_rt.load_model(d, hardware="cpu", num_views=2)
    with pytest.raises(ValueError, match="no tokenizer"):
        p.predict(camera_images[:2], STATE, prompt="x")
    (d / "norm_stats.json").unlink()
    with pytest.raises(FileNotFoundError, match="norm_stats"):
        flash_rt.load_model(d, hardware="cpu")


def test_pi0_frontend(tiny_pi0_ckpt, camera_images):
    p = flash_rt.load_model(tiny_pi0_ckpt, model="pi0", hardware="cpu", num_views=1)
    r = p.predict(camera_images[:1], STATE, prompt="open the drawer", seed=0)
    assert r.actions.shape == (p.config.horizon, 8) and np.isfinite(r.actions).all()
    with pytest.raises(ValueError, match="needs the robot state"):
        p.predict(camera_images[:1], None, token_ids=[2, 5, 6])
