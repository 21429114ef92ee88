"""Pi0.5, jax (openpi Orbax checkpoint), thor (Jetson Thor): FP8 + one CUDA Graph."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi05_thor import Pi05TorchFrontendThor


class Pi05JaxFrontendThor(OpenpiCheckpointFrontend, Pi05TorchFrontendThor):
    """Pi05TorchFrontendThor, weights read from an openpi checkpoint (its only difference)."""
