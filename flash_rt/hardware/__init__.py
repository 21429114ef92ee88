"""Frontend registry: one (model, framework, hardware) -> one frontend class.

The map is strictly one-to-one (no two rows share a class) so each hardware path is
its own file, and required hardware routing never happens inside a frontend.
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# Compute capability major -> hardware name of the fast paths built for it.
_CAPABILITY_TO_HARDWARE = {9: "hopper", 11: "thor", 12: "rtx_sm120"}
CPU = "cpu"
HARDWARE = ("hopper", "thor", "rtx_sm120", CPU)

_PIPELINE_MAP: dict[tuple[str, str, str], tuple[str, str]] = {
    ("pi05", "torch", "cpu"): ("flash_rt.frontends.torch.pi05_cpu", "Pi05TorchFrontendCpu"),
    ("pi05", "torch", "hopper"): ("flash_rt.frontends.torch.pi05_hopper", "Pi05TorchFrontendHopper"),
    ("pi05", "torch", "thor"): ("flash_rt.frontends.torch.pi05_thor", "Pi05TorchFrontendThor"),
    ("pi05", "torch", "rtx_sm120"): ("flash_rt.frontends.torch.pi05_rtx", "Pi05TorchFrontendRtx"),
    ("pi0", "torch", "cpu"): ("flash_rt.frontends.torch.pi0_cpu", "Pi0TorchFrontendCpu"),
    ("pi0", "torch", "hopper"): ("flash_rt.frontends.torch.pi0_hopper", "Pi0TorchFrontendHopper"),
    ("pi0", "torch", "thor"): ("flash_rt.frontends.torch.pi0_thor", "Pi0TorchFrontendThor"),
    ("pi0", "torch", "rtx_sm120"): ("flash_rt.frontends.torch.pi0_rtx", "Pi0TorchFrontendRtx"),
    ("groot", "torch", "cpu"): ("flash_rt.frontends.torch.groot_cpu", "GrootTorchFrontendCpu"),
    # openpi JAX checkpoints (Orbax params/ + assets/): the Pi torch rows' compute paths
    # (GR00T has no openpi format)
    ("pi05", "jax", "cpu"): ("flash_rt.frontends.jax.pi05_cpu", "Pi05JaxFrontendCpu"),
    ("pi05", "jax", "hopper"): ("flash_rt.frontends.jax.pi05_hopper", "Pi05JaxFrontendHopper"),
    ("pi05", "jax", "thor"): ("flash_rt.frontends.jax.pi05_thor", "Pi05JaxFrontendThor"),
    ("pi05", "jax", "rtx_sm120"): ("flash_rt.frontends.jax.pi05_rtx", "Pi05JaxFrontendRtx"),
    ("pi0", "jax", "cpu"): ("flash_rt.frontends.jax.pi0_cpu", "Pi0JaxFrontendCpu"),
    ("pi0", "jax", "hopper"): ("flash_rt.frontends.jax.pi0_hopper", "Pi0JaxFrontendHopper"),
    ("pi0", "jax", "thor"): ("flash_rt.frontends.jax.pi0_thor", "Pi0JaxFrontendThor"),
    ("pi0", "jax", "rtx_sm120"): ("flash_rt.frontends.jax.pi0_rtx", "Pi0JaxFrontendRtx"),
}


def registered() -> list[tuple[str, str, str]]:
    return sorted(_PIPELINE_MAP)


def detect_hardware() -> str:
    """The hardware name of the visible GPU, or ``cpu`` when there is none we build for."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return CPU
    if not torch.cuda.is_available():
        return CPU
    major, _minor = torch.cuda.get_device_capability()
    return _CAPABILITY_TO_HARDWARE.get(major, CPU)


def resolve_hardware(model: str, framework: str, hardware: str) -> str:
    """``auto`` picks the detected GPU's path if registered for this model and the CUDA
    kernel module is built, else ``cpu`` (with a warning naming what is missing)."""
    if hardware != "auto":
        return hardware
    detected = detect_hardware()
    if detected == CPU or (model, framework, detected) not in _PIPELINE_MAP:
        return CPU  # no GPU we build for: the reference, and nothing to warn about
    from flash_rt import kernels

    if not kernels.available():
        log.warning("hardware='auto': a %s GPU is visible but flash_rt_kernels is not built; "
                    "using the FP32 cpu reference (%s)", detected, kernels.BUILD_HINT)
        return CPU
    return detected


def frontend_class(model: str, framework: str, hardware: str):
    key = (model, framework, resolve_hardware(model, framework, hardware))
    if key not in _PIPELINE_MAP:
        valid = ", ".join(f"({m!r}, {f!r}, {h!r})" for m, f, h in registered())
        raise ValueError(f"no frontend for model={key[0]!r} framework={key[1]!r} "
                         f"hardware={key[2]!r}; registered combinations: {valid}")
    module_name, class_name = _PIPELINE_MAP[key]
    return getattr(importlib.import_module(module_name), class_name)
