"""Pi0.5, torch, cpu: the FP32 reference (ground truth for every Pi0.5 fast path)."""
from flash_rt.frontends.torch._reference_cpu import ReferenceCpuFrontend


class Pi05TorchFrontendCpu(ReferenceCpuFrontend):
    model = "pi05"
