"""Pi0.5, jax (openpi Orbax checkpoint), hopper (H100/H200): FP8 + one CUDA Graph."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi05_hopper import Pi05TorchFrontendHopper


class Pi05JaxFrontendHopper(OpenpiCheckpointFrontend, Pi05TorchFrontendHopper):
    """Pi05TorchFrontendHopper, weights read from an openpi checkpoint (its only difference)."""
