"""What every frontend shares: checkpoint resolution, pre/post-processing, noise, timing.

A hardware frontend only implements ``_load`` (build its compute path from the checkpoint)
and ``_infer`` (one preprocessed observation + noise -> normalised action chunk). Keeping
the rest here is what makes the cpu reference and every fast path comparable input for
input and noise for noise.

Opening a checkpoint has one hook, ``_open`` (directory + options -> config, processor and
the bundle ``_load`` takes). The Pi family's implementation is here; its checkpoint format
is the class attribute ``open_bundle`` (``model.safetensors``; the ``jax`` frontends swap in
openpi's Orbax reader). GR00T, another config/processor/checkpoint layout, overrides
``_open`` whole. Options a family or format has no use for (``embodiment`` for Pi,
``asset_id`` outside the openpi format) are refused, never ignored.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.checkpoint import CheckpointBundle, open_checkpoint
from flash_rt.core.latency import LatencyTracker
from flash_rt.models import processor_class
from flash_rt.models.common.processor import Observation
from flash_rt.processing import NormStats, Normalizer, Tokenizer

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1


@dataclass
class PredictResult:
    actions: np.ndarray  # (horizon, action_dims) float32, robot units
    actions_normalized: np.ndarray  # (horizon, action_dim) float32, model space
    latency_ms: float  # wall time of the whole predict call
    seed: Optional[int]  # the noise seed used (None when the caller passed noise)
    timing_ms: dict = field(default_factory=dict)  # preprocess / infer / postprocess


def noise_from_seed(seed: int, horizon: int, action_dim: int) -> torch.Tensor:
    """Flow-matching start noise N(0, I) of shape (1, horizon, action_dim), drawn on the CPU
    so every frontend (and the rosbag replay tools) gets the same noise for the same seed."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, horizon, action_dim), generator=gen, dtype=torch.float32)


class PolicyFrontend:
    model: str = ""
    framework: str = "torch"
    hardware: str = ""

    def __init__(self, checkpoint: str | Path, *, num_views: Optional[int] = None,
                 horizon: Optional[int] = None, num_steps: Optional[int] = None,
                 max_token_len: Optional[int] = None, action_dims: Optional[int] = None,
                 tokenizer: Optional[str | Path] = None, preset: Optional[str] = None,
                 cache_dir: Optional[str | Path] = None, weight_cache: bool = True,
                 precision: Optional[str] = None, embodiment: Optional[str] = None,
                 asset_id: Optional[str] = None):
        start = time.perf_counter()
        # options of the quantised GPU paths: caches and precision mode (the FP32 cpu
        # reference has neither, and refuses a precision it cannot honour)
        if precision is not None and self.hardware == "cpu" and precision != "fp32":
            raise ValueError(f"the cpu reference runs in FP32 only, not {precision!r}")
        self.cache_options = {"cache_dir": cache_dir, "weight_cache": weight_cache,
                              "precision": precision}
        bundle = self._open(checkpoint, preset=preset, tokenizer=tokenizer, num_views=num_views,
                            horizon=horizon, num_steps=num_steps, max_token_len=max_token_len,
                            action_dims=action_dims, embodiment=embodiment, asset_id=asset_id)
        self._latency = LatencyTracker()
        self._seeds = np.random.default_rng()
        self._load(bundle)
        log.info("%s/%s/%s ready (%s preset) in %.1f s", self.model, self.framework,
                 self.hardware, self.config.preset, time.perf_counter() - start)

    # -- hooks ------------------------------------------------------------------------------
    # The Pi family's checkpoint format: directory -> CheckpointBundle (its WeightSource,
    # norm stats, tokenizer, config). Signature (checkpoint, model, *, preset, tokenizer,
    # asset_id, **config overrides); model.safetensors here, openpi's params/ + assets/ in
    # the jax frontends (frontends/jax/_openpi_checkpoint.py), the compute path unchanged.
    open_bundle = staticmethod(open_checkpoint)

    def _open(self, checkpoint: str | Path, *, action_dims, embodiment, asset_id,
              **options):
        """Resolve the checkpoint; set ``config``, ``checkpoint_id`` and ``processor``;
        return what ``_load`` needs. The Pi family here, in whichever format ``open_bundle``
        reads (``options``: preset, tokenizer and the config overrides); GR00T overrides it."""
        if embodiment is not None:
            raise ValueError(f"embodiment= applies to GR00T checkpoints, not {self.model}")
        bundle = self.open_bundle(checkpoint, self.model, asset_id=asset_id, **options)
        self.config: ModelConfig = bundle.config
        self.checkpoint_id = bundle.checkpoint_id
        tok = (Tokenizer(bundle.tokenizer, max_vocab=self.config.prefix.vocab_size)
               if bundle.tokenizer else None)
        normalizer = Normalizer(NormStats.load(bundle.norm_stats), self.config)
        self.processor = processor_class(self.model)(self.config, normalizer, tok, action_dims)
        return bundle

    def _load(self, bundle: CheckpointBundle) -> None:
        raise NotImplementedError

    def _prepare(self, images, state, prompt, token_ids):
        """Raw inputs -> what ``_infer`` takes (the CPU path resizes images here)."""
        return self.processor.prepare(images, state, prompt=prompt, token_ids=token_ids)

    def _infer(self, obs: Observation, noise: torch.Tensor) -> np.ndarray:
        """-> normalised actions (horizon, action_dim) float32."""
        raise NotImplementedError

    def _postprocess(self, normalized: np.ndarray) -> np.ndarray:
        """Normalised chunk -> robot actions (H, action_dims); raises on NaN/inf."""
        return self.processor.postprocess(normalized)

    def recalibrate(self, observations: Sequence[dict], **kwargs) -> dict:
        """Re-measure activation scales on ``observations`` (dicts of predict() keyword
        arguments). Paths without quantised activations (the FP32 reference) have nothing
        to calibrate and return an empty report."""
        return {}

    # -- public -----------------------------------------------------------------------------
    @property
    def action_dims(self) -> int:
        return self.processor.action_dims

    def make_noise(self, noise: Optional[np.ndarray], seed: Optional[int]):
        """-> (noise (1, H, action_dim) float32 tensor, seed or None)."""
        shape = (self.config.horizon, self.config.action_dim)
        if noise is not None:
            if seed is not None:
                raise ValueError("pass noise= or seed=, not both")
            arr = np.asarray(noise, dtype=np.float32)
            if arr.shape not in (shape, (1,) + shape):
                raise ValueError(f"noise must have shape {shape}, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError("noise contains NaN or inf")
            return torch.from_numpy(arr.reshape((1,) + shape).copy()), None
        if seed is None:
            seed = int(self._seeds.integers(0, MAX_SEED))
        return noise_from_seed(seed, *shape), int(seed)

    def predict(self, images: Sequence[Optional[np.ndarray]], state: Optional[np.ndarray] = None,
                prompt: Optional[str] = None, token_ids: Optional[Sequence[int]] = None,
                noise: Optional[np.ndarray] = None, seed: Optional[int] = None) -> PredictResult:
        """Raw camera images + raw state + prompt (or token ids) -> an action chunk."""
        t0 = time.perf_counter()
        obs = self._prepare(images, state, prompt, token_ids)
        noise_t, used_seed = self.make_noise(noise, seed)
        t1 = time.perf_counter()
        normalized = self._infer(obs, noise_t)
        t2 = time.perf_counter()
        actions = self._postprocess(normalized)
        t3 = time.perf_counter()
        total_ms = (t3 - t0) * 1e3
        self._latency.add(total_ms)
        return PredictResult(
            actions=actions, actions_normalized=np.asarray(normalized, dtype=np.float32),
            latency_ms=total_ms, seed=used_seed,
            timing_ms={"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3,
                       "postprocess": (t3 - t2) * 1e3})

    def get_latency_stats(self) -> dict[str, float]:
        """count/mean/p50/p95/p99/max of predict() wall time in ms."""
        return self._latency.stats()
