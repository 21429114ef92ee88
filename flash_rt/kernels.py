"""Loader for the compiled CUDA kernel module ``flash_rt.flash_rt_kernels``.

The module is optional: a CPU-only install (no nvcc) has none, and everything else in
flash_rt keeps working. Code that needs the kernels calls :func:`load`, which raises
:class:`KernelsUnavailable` with the reason and the build instructions.

``PUBLIC_BINDINGS`` is the one declared list of public bindings; the build-inventory
test checks it against ``csrc/bindings.cpp`` (CPU only) and against every built module.
The bindings take raw device pointers; :func:`dptr` turns a tensor into one after
checking device, dtype, contiguity and size, so wrapper bugs fail loudly in Python.
"""
from __future__ import annotations

from typing import Any

PUBLIC_BINDINGS: tuple[str, ...] = (
    # GEMM (cuBLASLt)
    "gemm_fp8", "gemm_bf16", "gemm_fp8_autotune", "gemm_bf16_autotune",
    "gemm_cache_size", "gemm_cache_clear",
    # FP8 GEMM + GeGLU + FP8 quantisation, fused (CUTLASS, sm_90a)
    "gemm_fp8_geglu",
    # norms fused with quantisation
    "layernorm_fp8", "layernorm_bf16", "rmsnorm_fp8", "rmsnorm_bf16",
    "adarms_fp8", "adarms_bf16", "gated_residual_adarms_fp8",
    # elementwise
    "gated_residual", "geglu_fp8", "geglu_bf16", "silu_bf16", "quantize_fp8_static",
    "quantize_fp8_dynamic", "amax_update", "euler_step",
    # RoPE / embeddings / camera images
    "rope_qkv_split", "rope_table", "embed_gather", "resized_shape", "image_patches",
    # attention
    "attention", "attention_siglip", "attention_prefix", "attention_decoder",
    "attention_workspace_bytes", "attention_mqa_gemm", "attention_mqa_gemm_workspace_bytes",
    # the persistent action-expert kernel (sm_90a)
    "expert_megakernel", "expert_megakernel_smem_bytes", "expert_megakernel_folds_io",
    "expert_megakernel_sync_words",
    # launch policy (programmatic dependent launch) and build facts
    "set_programmatic_launch", "built_archs",
)
PUBLIC_ATTRIBUTES: tuple[str, ...] = ("Epilogue", "OutDtype", "MASK_VALUE", "E4M3_MAX",
                                      "GEGLU_INTERLEAVE")

BUILD_HINT = (
    "build it with nvcc (CUDA >= 12.8) present: `pip install pybind11 'nvidia-cublas>=13,<14'` "
    "and `pip install --no-deps nvidia-cutlass==4.2.0.0`, then "
    "`FLASH_RT_BUILD_KERNELS=1 pip install --no-build-isolation -e .` "
    "(FLASH_RT_GPU_ARCH='90a;110a;120a' to choose architectures), or bash .ci/build_kernels.sh")


class KernelsUnavailable(ImportError):
    """The CUDA kernel module is not built or cannot be loaded."""


_module: Any = None


def load() -> Any:
    """Return the ``flash_rt_kernels`` module or raise :class:`KernelsUnavailable`."""
    global _module
    if _module is not None:
        return _module
    try:
        from flash_rt import flash_rt_kernels as mod  # type: ignore[attr-defined]
    except ImportError as exc:
        raise KernelsUnavailable(f"flash_rt_kernels is not available ({exc}); {BUILD_HINT}") from exc
    missing = [n for n in PUBLIC_BINDINGS + PUBLIC_ATTRIBUTES if not hasattr(mod, n)]
    if missing:
        raise KernelsUnavailable(
            f"flash_rt_kernels at {mod.__file__} is stale: missing {missing}; rebuild. {BUILD_HINT}")
    _module = mod
    return mod


def available() -> bool:
    """True when the module imports (says nothing about a GPU being present)."""
    try:
        load()
        return True
    except KernelsUnavailable:
        return False


def dptr(t: Any, dtype: Any = None, numel: int | None = None, shape: tuple | None = None,
         align: int = 16, name: str = "tensor") -> int:
    """Device pointer of a CUDA tensor after checking the binding's contract.

    Raises ValueError for a CPU tensor, a wrong dtype, a non-contiguous view, a size that
    differs from ``numel``/``shape``, or a start address not ``align``-byte aligned.
    """
    import torch

    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"{name}: must be a CUDA tensor, got device {t.device}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name}: dtype must be {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous (got strides {t.stride()} for shape "
                         f"{tuple(t.shape)}); call .contiguous() first")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: shape must be {tuple(shape)}, got {tuple(t.shape)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name}: must hold {numel} elements, got {t.numel()} "
                         f"(shape {tuple(t.shape)})")
    p = t.data_ptr()
    if align > 1 and p % align:
        raise ValueError(f"{name}: data_ptr {p:#x} is not {align}-byte aligned")
    return p


def gemm_shapes(cfg: Any, views: int | None = None, prefix_len: int | None = None,
                horizon: int | None = None) -> list[tuple[str, int, int, int]]:
    """(name, M, N, K) of every linear layer of a Pi0.5 config (weights (N, K), merged
    QKV and gate/up), for autotuning at load time and for the kernel benchmark."""
    s, p, e = cfg.siglip, cfg.prefix, cfg.expert
    m_sig = (views or cfg.num_views) * cfg.tokens_per_view
    m_pre = prefix_len or cfg.max_prefix_len
    m_dec = horizon or cfg.horizon
    return [
        ("siglip_qkv", m_sig, 3 * s.width, s.width),
        ("siglip_o", m_sig, s.width, s.width),
        ("siglip_fc1", m_sig, s.mlp_dim, s.width),
        ("siglip_fc2", m_sig, s.width, s.mlp_dim),
        ("projector", m_sig, p.width, s.width),
        ("prefix_qkv", m_pre, p.q_dim + 2 * p.kv_dim, p.width),
        ("prefix_o", m_pre, p.width, p.q_dim),
        ("prefix_gate_up", m_pre, 2 * p.mlp_dim, p.width),
        ("prefix_down", m_pre, p.width, p.mlp_dim),
        ("expert_qkv", m_dec, e.q_dim + 2 * e.kv_dim, e.width),
        ("expert_o", m_dec, e.width, e.q_dim),
        ("expert_gate_up", m_dec, 2 * e.mlp_dim, e.width),
        ("expert_down", m_dec, e.width, e.mlp_dim),
        ("action_in", m_dec, e.width, cfg.action_dim),
        ("action_out", m_dec, cfg.action_dim, e.width),
    ]


def current_stream() -> int:
    """The current torch CUDA stream as the int the bindings take."""
    import torch

    return torch.cuda.current_stream().cuda_stream


__all__ = ["BUILD_HINT", "KernelsUnavailable", "PUBLIC_ATTRIBUTES", "PUBLIC_BINDINGS",
           "available", "current_stream", "dptr", "gemm_shapes", "load"]
