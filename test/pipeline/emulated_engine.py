"""A GPU frontend's wiring (weight spec, engine, mapped staging, calibration) on the CPU,
with the kernels emulated (emulated_kernels.py): what the CPU-emulation tests of every
PaliGemma model run."""
from __future__ import annotations

import torch

from flash_rt import load_model
from flash_rt.core.checkpoint import open_checkpoint
from flash_rt.core.weight_cache import CacheKey, WeightCache
from flash_rt.frontends.torch import _pi05_spec, _pi0_spec, _staging
from flash_rt.frontends.torch._converted_weights import load_converted_weights
from flash_rt.frontends.torch._paligemma_engine import PaliGemmaEngine

from .compare import prefix_kv_cosine, state_kv_cosine
from .emulated_kernels import EmulatedKernels

PROMPT = "pick up the red block"
WEIGHT_SPECS = {"pi05": _pi05_spec.build_spec, "pi0": _pi0_spec.build_spec}


class Emulated:
    """Engine + mapped staging on the CPU: the frontend's wiring without CUDA."""

    def __init__(self, ckpt, pipeline, monkeypatch, precision="fp8", staging="mapped",
                 **overrides):
        monkeypatch.setattr(_staging, "pinned", lambda shape, dtype: torch.zeros(shape, dtype=dtype))
        model = pipeline.model.model
        self.ref = load_model(ckpt, model=model, hardware="cpu", **overrides)
        bundle = open_checkpoint(ckpt, model, **overrides)
        cfg = self.cfg = bundle.config
        spec = WEIGHT_SPECS[model](cfg, precision)
        # the GPU frontends' weight path (cache off: nothing to key on here)
        self.weights = load_converted_weights(
            bundle, spec, WeightCache(enabled=False),
            CacheKey(bundle.checkpoint_id, "cpu", precision, spec.version, "emulated"), "cpu")
        self.k = EmulatedKernels()
        self.engine = PaliGemmaEngine(cfg, self.weights, pipeline, self.k, "cpu", 0)
        # "mapped": Thor's zero-copy staging; "device": Hopper / RTX's copies into twins
        staging_class = {"mapped": _staging.MappedStaging, "device": _staging.DeviceStaging}
        self.staging = staging_class[staging](self.engine.dims, "cpu")

    def run(self, images, state, seed, calibrate=False):
        raw = self.ref.processor.prepare_raw(images, state, prompt=PROMPT)
        noise, _ = self.ref.make_noise(None, seed)
        self.noise = noise[0].numpy()
        key = self.staging.write(raw, noise)
        self.rerun(key, calibrate)
        return self.engine.x.numpy().copy()

    def rerun(self, key, calibrate=False):
        """Copy the staged inputs in and run the whole inference (what a graph replays)."""
        ctx = self.engine.context(self.staging.pointers(key), calibrate)
        self.staging.copy_in(key, self.engine.x)
        self.engine.infer(ctx)

    def calibrate(self, frames, percentile=99.9):
        self.engine.calibrate(frames, lambda f: self.run(*f, calibrate=True), percentile)

    def kv_cosine(self, images, state):
        obs = self.ref.processor.prepare(images, state, prompt=PROMPT)
        return prefix_kv_cosine(self.engine.acts.t["k_cache"], self.engine.acts.t["v_cache"],
                                self.ref.reference, obs)

    def state_kv_cosine(self, images, state):
        obs = self.ref.processor.prepare(images, state, prompt=PROMPT)
        return state_kv_cosine(self.engine.acts.t["k_cache"], self.engine.acts.t["v_cache"],
                               self.ref.reference, obs)

    def reference(self, images, state, seed):
        return self.ref.predict(images, state, prompt=PROMPT, seed=seed).actions_normalized
