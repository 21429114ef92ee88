"""What a ``models/<model>/pipeline_<hw>.py`` file declares: the model's stages (its
attention sites, FP8 scale sites, inference and stage launchers, persistent expert kernel)
and the GPU's choices (attention backend, GEMM tuning, how the expert runs)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from flash_rt.hardware.attention import AttentionSpec
from flash_rt.hardware.gemm_tuning import Tuning
from flash_rt.models.common.paligemma_pipeline.context import StageContext
from flash_rt.models.common.paligemma_pipeline.dims import PaliGemmaDims

# How the action expert's layers run: the model's kernel sequence, or one persistent kernel
# per denoising step (Pi0.5 on Hopper: models/common/expert_megakernel.py).
# FLASH_RT_EXPERT overrides a pipeline's choice (A/B knob, read when the engine is built).
SEQUENCE, MEGAKERNEL = "sequence", "megakernel"
EXPERT_ENV = "FLASH_RT_EXPERT"
# FLASH_RT_PDL=1|0 overrides a pipeline's ``programmatic_launch`` (A/B knob, read when the
# engine is built).
PDL_ENV = "FLASH_RT_PDL"


@dataclass(frozen=True)
class ModelStages:
    """A model's part of the fast path, shared by its hardware files."""

    model: str  # the config's model name these stages implement
    attention_spec: Callable[[PaliGemmaDims], AttentionSpec]
    scale_sites: Callable[[PaliGemmaDims], list[str]]  # FP8 activation scales, table order
    infer: Callable[[StageContext], None]  # staged inputs -> actions in ``x``
    stages: Callable[[StageContext], dict[str, Callable[[], None]]]  # per-stage launchers
    # Why the persistent expert kernel cannot run this model/config (None: it can), and
    # its builder (dims, weights, activations, device) -> object with ``run(ctx, step)``.
    megakernel_unsupported: Callable[[PaliGemmaDims, dict], Optional[str]]
    megakernel: Optional[Callable[..., Any]] = None


@dataclass(frozen=True)
class HardwarePipeline:
    """A ``pipeline_<hw>.py`` module's choices: the model's stages, the attention backend,
    the GEMM tuning and how the action expert runs (SEQUENCE or MEGAKERNEL)."""

    model: ModelStages
    attention_backend: type
    tuning: Tuning
    expert: str = SEQUENCE
    # With expert=MEGAKERNEL: the largest horizon it is chosen for (None: any); larger ones
    # take the sequence, where that was measured faster (FLASH_RT_EXPERT still overrides).
    megakernel_max_horizon: Optional[int] = None
    # The module's kernels (not cuBLASLt's, not the persistent expert kernel, which has its
    # own FLASH_RT_MK_PDL) launched with programmatic dependent launch: each kernel's launch
    # and start-up overlap the previous kernel's tail (csrc/common.h). Off until measured.
    programmatic_launch: bool = False

    def wants_programmatic_launch(self) -> bool:
        env = os.environ.get(PDL_ENV)
        return self.programmatic_launch if env is None else env == "1"
