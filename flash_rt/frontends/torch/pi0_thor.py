"""Pi0, torch, thor (Jetson Thor): FP8 + one CUDA Graph, inputs read zero-copy from mapped
pinned memory (CPU and GPU share DRAM)."""
from flash_rt.frontends.torch._pi0_gpu import Pi0GpuFrontend
from flash_rt.frontends.torch._staging import MappedStaging
from flash_rt.models.pi0.pipeline_thor import PIPELINE


class Pi0TorchFrontendThor(Pi0GpuFrontend):
    hardware = "thor"
    pipeline = PIPELINE
    staging_class = MappedStaging
