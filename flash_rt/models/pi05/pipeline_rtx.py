"""Pi0.5 compute path on RTX Blackwell (sm_120a: RTX 5090).

Pi0.5's stages (``pipeline_common``) with the RTX attention backend (the kernel falls back
to its small-shared-memory tile for head_dim 256 by itself) and per-shape cuBLASLt
autotuning at load. Inputs arrive by async H2D copies inside the graph, as on Hopper.
Untuned on real hardware: no RTX 5090 is available to this project yet.
"""
from flash_rt.hardware.rtx.attn_backend import RtxAttentionBackend
from flash_rt.hardware.rtx.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import HardwarePipeline
from flash_rt.models.pi05.pipeline_common import PI05

PIPELINE = HardwarePipeline(model=PI05, attention_backend=RtxAttentionBackend, tuning=TUNING)
