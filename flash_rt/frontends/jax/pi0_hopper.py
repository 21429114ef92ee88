"""Pi0, jax (openpi Orbax checkpoint), hopper (H100/H200): FP8 + one CUDA Graph."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi0_hopper import Pi0TorchFrontendHopper


class Pi0JaxFrontendHopper(OpenpiCheckpointFrontend, Pi0TorchFrontendHopper):
    """Pi0TorchFrontendHopper, weights read from an openpi checkpoint (its only difference)."""
