"""Pi0.5 compute path on Hopper (sm_90a: H100 / H200).

Pi0.5's stages (``pipeline_common``) with Hopper's choices: the action expert's layers as
one persistent kernel per denoising step (``expert_megakernel.py``) at every horizon it
supports, where it measured faster than the kernel sequence in the whole pipeline (H100,
run 11: 9.61 vs 11.67 ms at 1 view h10, 10.91 vs 13.08 at 2 views h10, 10.90 vs 12.13 at
1 view h50, 12.40 vs 13.54 at 2 views h50; docs/performance.md, runs 7-11);
``FLASH_RT_EXPERT=sequence`` selects the sequence. Its attention backend (GEMM-based MQA
attention for the prefix and the decoder) and its GEMM tuning (``hardware/hopper/tuning.py``:
64 autotune candidates per shape, fast FP8 accumulation for K <= 2048). The stage functions
and their calibration twin (the same calls through ``calibrating(ctx)``) are Pi0.5's, in
``pipeline_common``.
"""
from flash_rt.hardware.hopper.attn_backend import HopperAttentionBackend
from flash_rt.hardware.hopper.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import MEGAKERNEL, HardwarePipeline
from flash_rt.models.pi05.pipeline_common import PI05

PIPELINE = HardwarePipeline(model=PI05, attention_backend=HopperAttentionBackend,
                            tuning=TUNING, expert=MEGAKERNEL)
