"""Per-model code: FP32 references, processors and (later) per-hardware pipelines."""
from __future__ import annotations


def processor_class(model: str):
    """The hardware-independent processor of ``model`` (prompt format, state handling)."""
    if model == "pi05":
        from flash_rt.models.pi05.processor import Pi05Processor
        return Pi05Processor
    if model == "pi0":
        from flash_rt.models.pi0.processor import Pi0Processor
        return Pi0Processor
    raise ValueError(f"no processor for model {model!r}")
