"""What the GPU frontends of the PaliGemma flow policies (Pi0, Pi0.5 on hopper, thor,
rtx_sm120) share: weights, buffers, calibration, CUDA Graphs.

A model's GPU frontend (``_pi05_gpu.py``, ``_pi0_gpu.py``) is this class plus its weight
spec; a hardware frontend adds two choices: its compute path (``pipeline``, from
``models/<model>/pipeline_<hw>.py``) and how inputs reach the GPU (``staging``: async
copies inside the graph, or zero-copy mapped memory). Load order:

1. weights: checkpoint -> declarative spec (fused, folded, FP8) -> device, or the verified
   on-disk cache keyed by checkpoint content, hardware, precision and spec version;
2. buffers, attention backend, GEMM autotuning (one eager pass, any input);
3. activation scales from the calibration cache, if this checkpoint/config was calibrated
   before. Otherwise the first ``predict`` calibrates on its own observation (never on
   zeros) before anything is returned, and ``recalibrate`` refines on many frames;
4. per camera-resolution key, one CUDA Graph of the whole inference (inputs -> SigLIP ->
   prefix -> (Pi0: the state token) -> all denoising steps -> un-normalised actions in
   pinned memory). Prompt length, view masks and the state are device data, so they never
   trigger a recapture.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np
import torch

import flash_rt
from flash_rt import kernels
from flash_rt.core.checkpoint import CheckpointBundle
from flash_rt.core.errors import GraphCaptureError
from flash_rt.core.weight_cache import CacheKey, WeightCache
from flash_rt.core.weight_spec import WeightSpec
from flash_rt.frontends.base import PolicyFrontend
from flash_rt.frontends.torch._converted_weights import load_converted_weights
from flash_rt.frontends.torch._paligemma_engine import PaliGemmaEngine
from flash_rt.frontends.torch._paligemma_spec import DEFAULT_PRECISION
from flash_rt.frontends.torch._staging import HostOutputs, ImageKey
from flash_rt.models.common import paligemma_pipeline as pp
from flash_rt.models.common.processor import RawObservation

log = logging.getLogger(__name__)

CALIBRATION_VERSION = "calib-1"
# Graph captures forbid unsafe CUDA calls only in the capturing thread. In torch's default
# ("global") mode any other thread's such call (an event wait, an allocation) fails during
# the capture and invalidates it: found on the H100 (2026-12-06) with the ROS node's camera
# callbacks decoding JPEG on the GPU (their own stream) while the first inference captured;
# the capture failed and the frontend stayed unusable. Other threads' work on their own
# streams does not enter the graph either way.
CAPTURE_MODE = "thread_local"
DEFAULT_PERCENTILE = 99.9  # over frames, of each site's per-frame amax
MAX_GRAPHS = 4


class PaliGemmaGpuFrontend(PolicyFrontend):
    framework = "torch"
    pipeline: pp.HardwarePipeline  # set by the hardware frontend
    staging_class: type  # DeviceStaging or MappedStaging
    # the model's weight spec: (config, precision) -> WeightSpec (set by the model frontend)
    weight_spec: Callable[[Any, str], WeightSpec]

    # -- loading ----------------------------------------------------------------------------
    def _load(self, bundle: CheckpointBundle) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError(f"the {self.hardware} frontend needs a CUDA GPU; use "
                               "hardware='cpu' for the FP32 reference")
        self.k = kernels.load()
        self.precision = self.cache_options.get("precision") or DEFAULT_PRECISION
        self._cache = WeightCache(self.cache_options.get("cache_dir"),
                                  enabled=self.cache_options.get("weight_cache", True))
        self.device = torch.device("cuda", torch.cuda.current_device())
        cfg = self.config
        phase = time.perf_counter()
        self._checkpoint_hash = (bundle.content_hash(memo_dir=self._cache.directory)
                                 if self._cache.enabled else bundle.checkpoint_id)
        self.weights = self._load_weights(bundle)
        log.info("weights ready in %.1f s", time.perf_counter() - phase)

        self.stream = torch.cuda.Stream(self.device)
        self.engine = PaliGemmaEngine(cfg, self.weights, self.pipeline, self.k, self.device,
                                      self.stream.cuda_stream)
        self.dims = d = self.engine.dims
        self.scales, self.gemm = self.engine.scales, self.engine.gemm
        self.staging = self.staging_class(d, self.device)
        scale, offset = self.processor.normalizer.action_affine()
        self.outputs = HostOutputs(d, scale, offset, self.device)
        self._graphs: OrderedDict[ImageKey, torch.cuda.CUDAGraph] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle()
        self._capture_failed: str | None = None  # why, once a capture failed (see _graph)

        if self.pipeline.tuning.autotune:
            phase = time.perf_counter()
            self._autotune()
            log.info("GEMM autotune in %.1f s", time.perf_counter() - phase)
        self.calibrated = self._load_calibration()

    def _cache_key(self, kind_version: str, **extra: Any) -> CacheKey:
        built = ",".join(sorted(self.k.built_archs()))
        return CacheKey(checkpoint_hash=self._checkpoint_hash, hardware=self.hardware,
                        precision=self.precision, spec_version=kind_version,
                        kernels_version=f"{flash_rt.__version__}+{built}",
                        extra=tuple(sorted((k, str(v)) for k, v in extra.items())))

    def _load_weights(self, bundle: CheckpointBundle) -> dict[str, torch.Tensor]:
        spec = self.weight_spec(self.config, self.precision)
        key = self._cache_key(spec.version, num_steps=self.config.num_steps)
        return load_converted_weights(bundle, spec, self._cache, key, self.device)

    # -- running ----------------------------------------------------------------------------
    def _ctx_for(self, key: ImageKey, calibrate: bool = False) -> pp.StageContext:
        return self.engine.context(self.staging.pointers(key), calibrate)

    def _run(self, key: ImageKey, ctx: pp.StageContext) -> None:
        """Everything one inference launches, on the current stream (eager or captured)."""
        self.staging.copy_in(key, self.engine.x)
        self.engine.infer(ctx)
        self.outputs.copy_out(self.engine.x)

    def _eager(self, key: ImageKey, ctx: pp.StageContext) -> None:
        with torch.cuda.stream(self.stream):
            self._run(key, ctx)
        self.stream.synchronize()

    def _autotune(self) -> None:
        s = self.dims.image_size
        raw = RawObservation(images=[np.zeros((s, s, 3), np.uint8)] * self.dims.views,
                             view_mask=np.ones(self.dims.views, bool),
                             tokens=np.ones(self.dims.text_len, np.int64),
                             token_mask=np.ones(self.dims.text_len, bool),
                             state=np.zeros(self.dims.action_dim, np.float32))
        key = self.staging.write(raw, torch.zeros(self.dims.horizon, self.dims.action_dim))
        self.gemm.tuning = True
        try:
            self._eager(key, self._ctx_for(key))
        finally:
            self.gemm.tuning = False

    def _graph(self, key: ImageKey) -> torch.cuda.CUDAGraph:
        if key in self._graphs:
            self._graphs.move_to_end(key)
            return self._graphs[key]
        if self._capture_failed is not None:
            raise GraphCaptureError(self._capture_failed)
        start = time.perf_counter()
        ctx = self._ctx_for(key)
        self._eager(key, ctx)  # warm-up: cuBLASLt plans for this key exist before capture
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=self.stream,
                                  capture_error_mode=CAPTURE_MODE):
                self._run(key, ctx)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            self._capture_failed = (f"CUDA graph capture failed ({type(exc).__name__}: "
                                    f"{first_line}); no capture can succeed again in this "
                                    "process")
            raise GraphCaptureError(self._capture_failed) from exc
        self._graphs[key] = graph
        if len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        log.info("captured the inference graph for camera sizes %s in %.2f s", key,
                 time.perf_counter() - start)
        return graph

    def _prepare(self, images, state, prompt, token_ids) -> RawObservation:
        return self.processor.prepare_raw(images, state, prompt=prompt, token_ids=token_ids)

    def _infer(self, obs: RawObservation, noise: torch.Tensor) -> np.ndarray:
        if not self.calibrated:
            self._calibrate([(obs, noise)], DEFAULT_PERCENTILE)
        key = self.staging.write(obs, noise)
        graph = self._graph(key)
        with torch.cuda.stream(self.stream):  # replay() launches on the current stream
            graph.replay()
        self.stream.synchronize()
        return self.outputs.normalized.numpy().copy()

    def _postprocess(self, normalized: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(normalized)):
            raise ValueError("model actions contain NaN or inf")
        return self.outputs.actions.numpy()[:, :self.action_dims].copy()

    # -- calibration --------------------------------------------------------------------------
    def _calibration_key(self) -> CacheKey:
        c = self.config
        return self._cache_key(f"{self.weight_spec(c, self.precision).version}/"
                               f"{CALIBRATION_VERSION}",
                               views=c.num_views, horizon=c.horizon, steps=c.num_steps,
                               max_token_len=c.max_token_len)

    def _load_calibration(self) -> bool:
        cached = self._cache.load("calibration", self._calibration_key())
        if cached is None or cached["scales"].shape != self.scales.scales.shape:
            return False
        self.scales.scales.copy_(cached["scales"])
        log.info("activation scales from the calibration cache (%d frames)",
                 int(cached["frames"][0]))
        return True

    def _calibrate(self, frames: Sequence[tuple[RawObservation, torch.Tensor]],
                   percentile: float) -> dict:
        """Run the calibration twin on each frame; scale = percentile over frames of each
        site's amax / 448. Returns a small report."""
        def run(frame: tuple[RawObservation, torch.Tensor]) -> None:
            key = self.staging.write(*frame)
            self._eager(key, self._ctx_for(key, calibrate=True))

        start = time.perf_counter()
        self.engine.calibrate(frames, run, percentile)
        self.calibrated = True
        self._cache.store("calibration", self._calibration_key(),
                          {"scales": self.scales.scales.contiguous(),
                           "frames": torch.tensor([len(frames)], dtype=torch.int32)})
        elapsed = time.perf_counter() - start
        log.info("calibrated %d activation scales on %d frame(s) in %.2f s",
                 len(self.scales.names), len(frames), elapsed)
        return {"frames": len(frames), "sites": len(self.scales.names),
                "percentile": percentile, "seconds": elapsed}

    def recalibrate(self, observations: Sequence[dict],
                    percentile: float = DEFAULT_PERCENTILE) -> dict:
        """Re-measure the FP8 activation scales on real observations (dicts of ``predict``
        keyword arguments: images, state, prompt or token_ids, optional seed/noise). The
        captured graphs read the scale table from device memory, so none is recaptured."""
        frames = []
        for obs in observations:
            obs = dict(obs)
            noise, _ = self.make_noise(obs.pop("noise", None), obs.pop("seed", None))
            raw = self._prepare(obs.pop("images"), obs.pop("state", None), obs.pop("prompt", None),
                                obs.pop("token_ids", None))
            if obs:
                raise TypeError(f"unknown observation keys {sorted(obs)}")
            frames.append((raw, noise))
        return self._calibrate(frames, percentile)

    # -- measurement helpers (bench/policy.py) --------------------------------------------------
    def replay_ms(self, iters: int) -> list[float]:
        """Device time of ``iters`` replays of the most recent graph (CUDA events)."""
        if not self._graphs:
            raise RuntimeError("call predict() once first")
        graph = next(reversed(self._graphs.values()))
        return _time_on(self.stream, graph.replay, iters)

    def stage_graphs(self) -> dict[str, Callable[[], None]]:
        """Stage name -> a launcher replaying it on the frontend's stream: the model's stages
        (SigLIP, prefix, Pi0's state token, one denoising step), each captured into its own
        graph over the most recent observation's buffers, and the whole inference
        ("infer")."""
        if not self._graphs:
            raise RuntimeError("call predict() once first")
        key = next(reversed(self._graphs))
        out = {}
        for name, fn in self.engine.stages(self._ctx_for(key)).items():
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self._pool, stream=self.stream,
                                  capture_error_mode=CAPTURE_MODE):
                fn()
            out[name] = self._launcher(g)
        out["infer"] = self._launcher(self._graphs[key])
        return out

    def _launcher(self, graph: torch.cuda.CUDAGraph) -> Callable[[], None]:
        def replay() -> None:
            with torch.cuda.stream(self.stream):  # replay() launches on the current stream
                graph.replay()
        return replay

    def stage_ms(self, iters: int) -> dict[str, list[float]]:
        """Per-stage device time of the model's stages; see stage_graphs."""
        stages = self.stage_graphs()
        stages.pop("infer")
        return {name: _time_on(self.stream, fn, iters) for name, fn in stages.items()}


def _time_on(stream: torch.cuda.Stream, fn, iters: int) -> list[float]:
    times = []
    with torch.cuda.stream(stream):
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            fn()
            b.record(stream)
            b.synchronize()
            times.append(a.elapsed_time(b))
    return times

