"""Pi0, jax (openpi Orbax checkpoint), thor (Jetson Thor): FP8 + one CUDA Graph."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi0_thor import Pi0TorchFrontendThor


class Pi0JaxFrontendThor(OpenpiCheckpointFrontend, Pi0TorchFrontendThor):
    """Pi0TorchFrontendThor, weights read from an openpi checkpoint (its only difference)."""
