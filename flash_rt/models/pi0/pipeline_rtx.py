"""Pi0 compute path on RTX Blackwell (sm_120a: RTX 5090).

Pi0's stages (``pipeline_common``) with the RTX attention backend and GEMM tuning; inputs
arrive by async H2D copies inside the graph. Untuned on real hardware: no RTX 5090 is
available here.
"""
from flash_rt.hardware.rtx.attn_backend import RtxAttentionBackend
from flash_rt.hardware.rtx.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import HardwarePipeline
from flash_rt.models.pi0.pipeline_common import PI0

PIPELINE = HardwarePipeline(model=PI0, attention_backend=RtxAttentionBackend, tuning=TUNING)
