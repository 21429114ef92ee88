"""What the Pi0 GPU frontends (hopper, thor, rtx_sm120) share: the PaliGemma GPU frontend
with Pi0's weight spec (the hardware file adds its pipeline and staging)."""
from flash_rt.frontends.torch._paligemma_gpu import PaliGemmaGpuFrontend
from flash_rt.frontends.torch._pi0_spec import build_spec


class Pi0GpuFrontend(PaliGemmaGpuFrontend):
    model = "pi0"
    weight_spec = staticmethod(build_spec)
