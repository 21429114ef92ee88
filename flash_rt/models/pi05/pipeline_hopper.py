"""Pi0.5 compute path on Hopper (sm_90a: H100 / H200).

Pi0.5's stages (``pipeline_common``) with Hopper's choices: the action expert's layers as
the kernel sequence (the persistent kernel, ``FLASH_RT_EXPERT=megakernel``, is correct on
the H100, at parity in the whole pipeline at horizon 10 and slower at horizon 50: see
docs/performance.md), its attention backend
(GEMM-based MQA attention for the prefix and the decoder) and its GEMM tuning
(``hardware/hopper/tuning.py``: 64 autotune candidates per shape, fast FP8 accumulation for
K <= 2048). The stage functions and their calibration twin (the same calls through
``calibrating(ctx)``) are Pi0.5's, in ``pipeline_common``.
"""
from flash_rt.hardware.hopper.attn_backend import HopperAttentionBackend
from flash_rt.hardware.hopper.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import SEQUENCE, HardwarePipeline
from flash_rt.models.pi05.pipeline_common import PI05

PIPELINE = HardwarePipeline(model=PI05, attention_backend=HopperAttentionBackend,
                            tuning=TUNING, expert=SEQUENCE)
