"""Pi0, torch, cpu: the FP32 reference (ground truth for every Pi0 fast path)."""
from flash_rt.frontends.torch._reference_cpu import ReferenceCpuFrontend


class Pi0TorchFrontendCpu(ReferenceCpuFrontend):
    model = "pi0"
