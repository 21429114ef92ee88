"""Pi0.5 compute path on Hopper (sm_90a: H100 / H200).

Pi0.5's stages (``pipeline_common``) with Hopper's choices: the action expert's layers as
one persistent kernel per denoising step (``expert_megakernel.py``) up to horizon 16, where
it measured faster than the kernel sequence in the whole pipeline (H100, run 9: 10.18 vs
11.67 ms at 1 view h10, 11.64 vs 13.09 at 2 views h10), and the kernel sequence above (slower
there: 14.24 vs 13.53 ms at 2 views h50; docs/performance.md, runs 7-9); ``FLASH_RT_EXPERT``
overrides both ways. Its attention backend (GEMM-based MQA attention for the prefix and
the decoder) and its GEMM tuning (``hardware/hopper/tuning.py``: 64 autotune candidates per
shape, fast FP8 accumulation for K <= 2048). The stage functions and their calibration
twin (the same calls through ``calibrating(ctx)``) are Pi0.5's, in ``pipeline_common``.
"""
from flash_rt.hardware.hopper.attn_backend import HopperAttentionBackend
from flash_rt.hardware.hopper.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import MEGAKERNEL, HardwarePipeline
from flash_rt.models.pi05.pipeline_common import PI05

# The persistent kernel's largest measured-faster horizon: its 16-token instance (tpad 16).
MEGAKERNEL_MAX_HORIZON = 16

PIPELINE = HardwarePipeline(model=PI05, attention_backend=HopperAttentionBackend,
                            tuning=TUNING, expert=MEGAKERNEL,
                            megakernel_max_horizon=MEGAKERNEL_MAX_HORIZON)
