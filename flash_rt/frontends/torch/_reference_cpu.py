"""The FP32 reference run on the CPU: shared by the pi05 and pi0 cpu frontends.

It is the ground truth, the CI path, and the fallback on machines without a supported GPU.
"""
from __future__ import annotations

import numpy as np
import torch

from flash_rt.core.checkpoint import CheckpointBundle, build_empty_reference, load_reference_weights
from flash_rt.core.progress import ProgressBar
from flash_rt.frontends.base import PolicyFrontend
from flash_rt.models.common.processor import Observation


class ReferenceCpuFrontend(PolicyFrontend):
    framework = "torch"
    hardware = "cpu"

    def _load(self, bundle: CheckpointBundle) -> None:
        bar = ProgressBar("loading weights", len(bundle.reader.keys()))
        self.reference = load_reference_weights(build_empty_reference(self.config),
                                                bundle.reader, progress=bar.update)
        bar.close()

    def _infer(self, obs: Observation, noise: torch.Tensor) -> np.ndarray:
        out = self.reference.sample_actions(obs.pixels, obs.view_mask, obs.tokens,
                                            obs.token_mask, noise, state=obs.state)
        return out[0].numpy()
