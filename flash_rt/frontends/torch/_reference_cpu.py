"""The FP32 reference run on the CPU: shared by the pi05, pi0 and groot cpu frontends.

It is the ground truth, the CI path, and the fallback on machines without a supported GPU.
:meth:`ReferenceCpuFrontend.to` moves the same reference to a CUDA device and/or bf16:
the FP32 reference on a GPU (ground truth for full-size replays, which take 10-30 s per
chunk on a CPU) and the bf16 torch baseline. The frontend's ``hardware`` stays ``cpu``:
it is still the reference, not a registered fast path.
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
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32) -> "ReferenceCpuFrontend":
        """Move the reference's weights to ``device`` and cast them to ``dtype`` (FP32 or
        bf16); inputs follow at each predict. Pre/post-processing and the noise (drawn on
        the CPU from the seed) are unchanged, so chunks stay comparable seed for seed."""
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"the reference runs in float32 or bfloat16, not {dtype}")
        self.device = torch.device(device)
        self.reference.to(device=self.device, dtype=dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.reference.dtype

    def _infer(self, obs: Observation, noise: torch.Tensor) -> np.ndarray:
        dev = self.device

        def put(t):
            return t.to(dev, non_blocking=True)

        out = self.reference.sample_actions(put(obs.pixels), put(obs.view_mask), put(obs.tokens),
                                            put(obs.token_mask), put(noise), state=put(obs.state))
        return out[0].float().cpu().numpy()
