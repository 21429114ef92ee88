"""Pi0.5, jax (openpi Orbax checkpoint), cpu: the FP32 reference."""
from flash_rt.frontends.jax._openpi_checkpoint import OpenpiCheckpointFrontend
from flash_rt.frontends.torch.pi05_cpu import Pi05TorchFrontendCpu


class Pi05JaxFrontendCpu(OpenpiCheckpointFrontend, Pi05TorchFrontendCpu):
    """Pi05TorchFrontendCpu, weights read from an openpi checkpoint (its only difference)."""
