"""Pi0, torch, rtx_sm120 (RTX 5090): FP8 + one CUDA Graph, inputs copied H2D inside it."""
from flash_rt.frontends.torch._pi0_gpu import Pi0GpuFrontend
from flash_rt.frontends.torch._staging import DeviceStaging
from flash_rt.models.pi0.pipeline_rtx import PIPELINE


class Pi0TorchFrontendRtx(Pi0GpuFrontend):
    hardware = "rtx_sm120"
    pipeline = PIPELINE
    staging_class = DeviceStaging
