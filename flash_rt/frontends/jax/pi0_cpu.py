"""Pi0, jax (openpi Orbax checkpoint), cpu: the FP32 reference."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi0_cpu import Pi0TorchFrontendCpu


class Pi0JaxFrontendCpu(OpenpiCheckpointFrontend, Pi0TorchFrontendCpu):
    """Pi0TorchFrontendCpu, weights read from an openpi checkpoint (its only difference)."""
