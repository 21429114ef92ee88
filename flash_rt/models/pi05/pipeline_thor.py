"""Pi0.5 compute path on Jetson Thor (sm_110a).

Pi0.5's stages (``pipeline_common``) with Thor's attention backend (fewer key splits for
its 20 SMs) and per-shape cuBLASLt autotuning at load. The frontend feeds this path
zero-copy: camera frames, tokens and masks are read by the kernels straight from mapped
pinned host memory (Thor's CPU and GPU share DRAM), so no H2D copies run.
Untuned on real hardware: no Thor is available to this project yet.
"""
from flash_rt.hardware.thor.attn_backend import ThorAttentionBackend
from flash_rt.hardware.thor.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import HardwarePipeline
from flash_rt.models.pi05.pipeline_common import PI05

PIPELINE = HardwarePipeline(model=PI05, attention_backend=ThorAttentionBackend, tuning=TUNING)
