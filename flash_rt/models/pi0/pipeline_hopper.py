"""Pi0 compute path on Hopper (sm_90a: H100 / H200).

Pi0's stages (``pipeline_common``) with Hopper's attention backend (GEMM-based MQA
attention for the prefix, the actions and the state token) and GEMM tuning
(``hardware/hopper/tuning.py``). The action expert runs as the kernel sequence by default;
``FLASH_RT_EXPERT=megakernel`` selects the persistent kernel's Pi0 instance
(``pipeline_common``), which is checked on the CPU against this sequence and not yet
measured on a GPU: it becomes the default once it is (as Pi0.5's did, docs/performance.md).
"""
from flash_rt.hardware.hopper.attn_backend import HopperAttentionBackend
from flash_rt.hardware.hopper.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import HardwarePipeline
from flash_rt.models.pi0.pipeline_common import PI0

PIPELINE = HardwarePipeline(model=PI0, attention_backend=HopperAttentionBackend, tuning=TUNING)
