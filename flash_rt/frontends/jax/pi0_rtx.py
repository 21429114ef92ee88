"""Pi0, jax (openpi Orbax checkpoint), rtx_sm120 (RTX 5090): FP8 + one CUDA Graph."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi0_rtx import Pi0TorchFrontendRtx


class Pi0JaxFrontendRtx(OpenpiCheckpointFrontend, Pi0TorchFrontendRtx):
    """Pi0TorchFrontendRtx, weights read from an openpi checkpoint (its only difference)."""
