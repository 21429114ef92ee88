"""Pi0.5, torch, hopper (H100/H200): FP8 + one CUDA Graph, inputs copied H2D inside it."""
from flash_rt.frontends.torch._pi05_gpu import Pi05GpuFrontend
from flash_rt.frontends.torch._staging import DeviceStaging
from flash_rt.models.pi05.pipeline_hopper import PIPELINE


class Pi05TorchFrontendHopper(Pi05GpuFrontend):
    hardware = "hopper"
    pipeline = PIPELINE
    staging_class = DeviceStaging
