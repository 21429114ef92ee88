"""Pi0.5, torch, thor (Jetson Thor): FP8 + one CUDA Graph, inputs read zero-copy from
mapped pinned memory (CPU and GPU share DRAM)."""
from flash_rt.frontends.torch._pi05_gpu import Pi05GpuFrontend
from flash_rt.frontends.torch._staging import MappedStaging
from flash_rt.models.pi05.pipeline_thor import PIPELINE


class Pi05TorchFrontendThor(Pi05GpuFrontend):
    hardware = "thor"
    pipeline = PIPELINE
    staging_class = MappedStaging
