"""Pi0.5, jax (openpi Orbax checkpoint), rtx_sm120 (RTX 5090): FP8 + one CUDA Graph."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi05_rtx import Pi05TorchFrontendRtx


class Pi05JaxFrontendRtx(OpenpiCheckpointFrontend, Pi05TorchFrontendRtx):
    """Pi05TorchFrontendRtx, weights read from an openpi checkpoint (its only difference)."""
