"""Pi0.5, torch, rtx_sm120 (RTX 5090): FP8 + one CUDA Graph, inputs copied H2D inside it."""
from flash_rt.frontends.torch._pi05_gpu import Pi05GpuFrontend
from flash_rt.frontends.torch._staging import DeviceStaging
from flash_rt.models.pi05.pipeline_rtx import PIPELINE


class Pi05TorchFrontendRtx(Pi05GpuFrontend):
    hardware = "rtx_sm120"
    pipeline = PIPELINE
    staging_class = DeviceStaging
