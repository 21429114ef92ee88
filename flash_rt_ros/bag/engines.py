"""The policies a replay runs: the reference (FP32 on the CPU or a CUDA device, or the bf16
baseline) and the engine under test (any ``flash_rt.load_model`` hardware)."""
from __future__ import annotations

import dataclasses
import platform

from flash_rt_ros.frontend import hardware_name, load_policy
from flash_rt_ros.params import NodeParams

REFERENCES = ("cpu", "cuda-fp32", "cuda-bf16")
HARDWARE = ("auto", "cpu", "hopper", "thor", "rtx_sm120")


def num_views(p: NodeParams) -> int:
    return p.num_views or len(p.camera_topics)


def _load(p: NodeParams, checkpoint: str, hardware: str):
    q = dataclasses.replace(p, checkpoint_dir=str(checkpoint), hardware=hardware)
    return load_policy(q, num_views(p), len(p.joint_names))


def load_reference(kind: str, p: NodeParams, checkpoint: str):
    """(policy, provenance) of the reference ``kind``: the FP32 reference frontend, on the
    CPU or moved to CUDA (in FP32 with TF32 off, or in bf16)."""
    import torch

    if kind not in REFERENCES:
        raise ValueError(f"--reference must be one of {REFERENCES}, got {kind!r}")
    if kind != "cpu" and not torch.cuda.is_available():
        raise RuntimeError(f"--reference {kind} needs a CUDA device; none is visible")
    policy = _load(p, checkpoint, "cpu")
    device = "cpu"
    if kind != "cpu":
        # An FP32 reference must not silently run its matmuls/convolutions in TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        policy.to("cuda", torch.bfloat16 if kind == "cuda-bf16" else torch.float32)
        device = torch.cuda.get_device_name()
    return policy, {"reference": kind, "hardware": kind, "device": device, **_versions(policy)}


def load_engine(hardware: str, p: NodeParams, checkpoint: str):
    """(policy, provenance) of the engine under test: ``flash_rt.load_model(hardware=...)``."""
    import torch

    if hardware not in HARDWARE:
        raise ValueError(f"--hardware must be one of {HARDWARE}, got {hardware!r}")
    policy = _load(p, checkpoint, hardware)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return policy, {"hardware": hardware_name(policy, hardware), "device": device,
                    **_versions(policy)}


def _versions(policy) -> dict:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(),
            "checkpoint_id": str(getattr(policy, "checkpoint_id", "") or ""),
            "dtype": str(getattr(policy, "dtype", "")).replace("torch.", "")}
