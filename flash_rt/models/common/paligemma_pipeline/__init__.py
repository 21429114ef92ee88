"""The fast-path pieces every PaliGemma flow policy (Pi0, Pi0.5) shares.

``dims`` (sizes), ``buffers`` (activations, scale table, staged-input pointers), ``gemm``
(Linear pointers, cuBLASLt runner), ``quant`` (static quantiser and its calibration twin),
``context`` (what a stage reads), ``stages`` (SigLIP, the prefix LM, plain Gemma layers,
the Euler step), ``hardware_pipeline`` (what a ``pipeline_<hw>.py`` declares). A model's
own decoder lives in ``models/<model>/pipeline_common.py``.
"""
from flash_rt.models.common.paligemma_pipeline.buffers import (
    KV_TAIL_ROWS, Activations, InputPointers, ScaleTable,
)
from flash_rt.models.common.paligemma_pipeline.context import StageContext, calibrating
from flash_rt.models.common.paligemma_pipeline.dims import PaliGemmaDims
from flash_rt.models.common.paligemma_pipeline.gemm import (
    GemmRunner, LinearPtrs, linear_ptrs, weights_by_shape,
)
from flash_rt.models.common.paligemma_pipeline.hardware_pipeline import (
    EXPERT_ENV, MEGAKERNEL, SEQUENCE, HardwarePipeline, ModelStages,
)
from flash_rt.models.common.paligemma_pipeline.quant import (
    CalibratingQuant, Quantiser, StaticQuant,
)
from flash_rt.models.common.paligemma_pipeline.stages import (
    GemmaRun, attention_spec, denoise, expert_step_sites, flow_step, gemma_layers,
    gemma_sites, prefix_forward, siglip_forward, vision_prefix_sites,
)

__all__ = [
    "Activations", "CalibratingQuant", "EXPERT_ENV", "GemmRunner", "GemmaRun",
    "HardwarePipeline", "InputPointers", "KV_TAIL_ROWS", "LinearPtrs", "MEGAKERNEL",
    "ModelStages", "PaliGemmaDims", "Quantiser", "SEQUENCE", "ScaleTable", "StageContext",
    "StaticQuant", "attention_spec", "calibrating", "denoise", "expert_step_sites",
    "flow_step", "gemma_layers", "gemma_sites", "linear_ptrs", "prefix_forward",
    "siglip_forward", "vision_prefix_sites", "weights_by_shape",
]
