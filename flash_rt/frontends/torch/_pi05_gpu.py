"""What the Pi0.5 GPU frontends (hopper, thor, rtx_sm120) share: the PaliGemma GPU
frontend with Pi0.5's weight spec (the hardware file adds its pipeline and staging)."""
from flash_rt.frontends.torch._paligemma_gpu import PaliGemmaGpuFrontend
from flash_rt.frontends.torch._pi05_spec import build_spec


class Pi05GpuFrontend(PaliGemmaGpuFrontend):
    model = "pi05"
    weight_spec = staticmethod(build_spec)
