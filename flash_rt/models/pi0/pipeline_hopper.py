"""Pi0 compute path on Hopper (sm_90a: H100 / H200).

Pi0's stages (``pipeline_common``) with Hopper's attention backend (GEMM-based MQA
attention for the prefix, the actions and the state token) and GEMM tuning
(``hardware/hopper/tuning.py``). The action expert runs as the persistent kernel's Pi0
instance (``pipeline_common``: plain residuals, no adaRMS) wherever its dims allow, as
Pi0.5's does: on the H100 (2026-12-06) one step 559 vs 736 us (1 view h10) and 752 vs 795
(2 views h50) against the kernel sequence, chunk cosine vs the FP32 reference unchanged
(0.99800 / 0.99825 / 0.99796 at 1v h10 / 2v h50 / 3v h10, sequence 0.99811 / 0.99825 /
0.99799; docs/performance.md, docs/precision.md). ``FLASH_RT_EXPERT=sequence`` selects the
sequence.
"""
from flash_rt.hardware.hopper.attn_backend import HopperAttentionBackend
from flash_rt.hardware.hopper.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import MEGAKERNEL, HardwarePipeline
from flash_rt.models.pi0.pipeline_common import PI0

PIPELINE = HardwarePipeline(model=PI0, attention_backend=HopperAttentionBackend, tuning=TUNING,
                            expert=MEGAKERNEL)
