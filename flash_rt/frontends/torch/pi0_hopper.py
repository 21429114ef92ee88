"""Pi0, torch, hopper (H100/H200): FP8 + one CUDA Graph, inputs copied H2D inside it."""
from flash_rt.frontends.torch._pi0_gpu import Pi0GpuFrontend
from flash_rt.frontends.torch._staging import DeviceStaging
from flash_rt.models.pi0.pipeline_hopper import PIPELINE


class Pi0TorchFrontendHopper(Pi0GpuFrontend):
    hardware = "hopper"
    pipeline = PIPELINE
    staging_class = DeviceStaging
