"""Pi0 compute path on Jetson Thor (sm_110a).

Pi0's stages (``pipeline_common``) with Thor's attention backend and GEMM tuning; the
frontend feeds it zero-copy (the kernels read camera frames, tokens, masks and the state
from mapped pinned host memory). Untuned on real hardware: no Thor is available here.
"""
from flash_rt.hardware.thor.attn_backend import ThorAttentionBackend
from flash_rt.hardware.thor.tuning import TUNING
from flash_rt.models.common.paligemma_pipeline import HardwarePipeline
from flash_rt.models.pi0.pipeline_common import PI0

PIPELINE = HardwarePipeline(model=PI0, attention_backend=ThorAttentionBackend, tuning=TUNING)
