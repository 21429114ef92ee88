"""Per-model code: FP32 references, processors and (later) per-hardware pipelines.

``_MODEL_PARTS`` names each model's hardware-independent pieces; they are imported lazily
so loading one model never imports the other.
"""
from __future__ import annotations

import importlib

_MODEL_PARTS = {
    "pi05": {"reference": "flash_rt.models.pi05.reference:Pi05Reference",
             "processor": "flash_rt.models.pi05.processor:Pi05Processor"},
    "pi0": {"reference": "flash_rt.models.pi0.reference:Pi0Reference",
            "processor": "flash_rt.models.pi0.processor:Pi0Processor"},
    "groot": {"reference": "flash_rt.models.groot.reference:GrootReference",
              "processor": "flash_rt.models.groot.processor:GrootProcessor"},
}


def _part(model: str, part: str):
    if model not in _MODEL_PARTS:
        raise ValueError(f"unknown model {model!r}; expected one of {tuple(_MODEL_PARTS)}")
    module, _, name = _MODEL_PARTS[model][part].partition(":")
    return getattr(importlib.import_module(module), name)


def reference_class(model: str):
    """The FP32 reference ``nn.Module`` class of ``model`` (the ground truth)."""
    return _part(model, "reference")


def processor_class(model: str):
    """The processor of ``model`` (prompt format, state handling)."""
    return _part(model, "processor")
