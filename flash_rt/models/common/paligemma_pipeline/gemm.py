"""GEMM launches of the kernel sequences: Linear pointers and the cuBLASLt runner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from flash_rt.hardware.gemm_tuning import Tuning

GEMM_WORKSPACE_BYTES = 32 << 20
AUTOTUNE_COLD_ENV = "FLASH_RT_AUTOTUNE_COLD"
FAST_ACCUM_ENV = "FLASH_RT_FAST_ACCUM_MAX_K"
CANDIDATES_ENV = "FLASH_RT_AUTOTUNE_CANDIDATES"
FUSED_GEGLU_ENV = "FLASH_RT_FUSED_GEGLU"
FUSED_GEGLU_CONFIG_ENV = "FLASH_RT_FUSED_GEGLU_CONFIG"


class GemmRunner:
    """GEMM launches with a shared cuBLASLt workspace; in ``tuning`` mode the first call of
    each distinct shape/config is autotuned (fastest measured kernel is then cached).

    The autotune cycles through every weight of the GEMM's shape (``same_shape``: the other
    layers'), so candidates are ranked with weights streaming from HBM as in the forward
    pass, not sitting in L2. FP8 GEMMs with K <= ``tuning.fast_accum_max_k`` use fast
    accumulation. Development knobs for A/B runs, read here: ``FLASH_RT_AUTOTUNE_COLD=0``
    (time one weight), ``FLASH_RT_FAST_ACCUM_MAX_K``, ``FLASH_RT_AUTOTUNE_CANDIDATES``,
    ``FLASH_RT_FUSED_GEGLU=1|0`` (the fused gate/up + GeGLU GEMM on / off whatever the
    GPU's tuning says; it exists for sm_90a only), ``FLASH_RT_FUSED_GEGLU_CONFIG`` (its
    config, ``gemm_fp8_geglu``'s ``config``)."""

    def __init__(self, kernels: Any, device: Any, tuning: Tuning,
                 same_shape: dict[tuple[int, int, bool], list[int]] | None = None):
        self.k = kernels
        self.fast_accum_max_k = int(os.environ.get(FAST_ACCUM_ENV, tuning.fast_accum_max_k))
        self.candidates = int(os.environ.get(CANDIDATES_ENV, tuning.autotune_candidates))
        fused = os.environ.get(FUSED_GEGLU_ENV)
        self.fused_geglu = tuning.fused_geglu if fused is None else fused == "1"
        self.geglu_config = int(os.environ.get(FUSED_GEGLU_CONFIG_ENV, tuning.fused_geglu_config))
        self._ws = torch.empty(GEMM_WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        self.tuning = False
        self._tuned: set[tuple] = set()
        cold = os.environ.get(AUTOTUNE_COLD_ENV, "1") != "0"
        self._same_shape = (same_shape or {}) if cold else {}

    def _cycle(self, w: "LinearPtrs") -> list[int]:
        return [p for p in self._same_shape.get(w.shape_key, []) if p != w.w]

    def _opts(self, bias: int, c: int, gelu: bool) -> dict:
        e = self.k.Epilogue
        epilogue = ((e.BIAS_GELU if gelu else e.BIAS) if bias else (e.GELU if gelu else e.NONE))
        return dict(bias=bias, c=c, workspace=self._ws.data_ptr(),
                    workspace_bytes=GEMM_WORKSPACE_BYTES, epilogue=epilogue)

    def _tune_now(self, key: tuple) -> bool:
        if not self.tuning or key in self._tuned:
            return False
        self._tuned.add(key)
        return True

    def fp8(self, a: int, w: "LinearPtrs", d: int, M: int, a_scale: int, stream: int, *,
            c: int = 0, gelu: bool = False) -> None:
        opts = self._opts(w.b, c, gelu)
        opts["fast_accum"] = w.K <= self.fast_accum_max_k
        key = ("fp8", M, w.N, w.K, bool(w.b), bool(c), gelu)
        if self._tune_now(key):
            self.k.gemm_fp8_autotune(a, w.w, d, M, w.N, w.K, a_scale, w.ws, stream,
                                     b_cycle=self._cycle(w), max_candidates=self.candidates,
                                     **opts)
        else:
            self.k.gemm_fp8(a, w.w, d, M, w.N, w.K, a_scale, w.ws, stream, **opts)

    def fuses_geglu(self, w: "LinearPtrs") -> bool:
        """Whether gate/up ``w`` and its GeGLU run as one GEMM (:meth:`fp8_geglu`): the GPU's
        choice, an FP8 Linear, and a K with fast accumulation (the fused kernel's only
        accumulation mode, the one the separate GEMM would use)."""
        return self.fused_geglu and w.fp8 and w.K <= self.fast_accum_max_k

    def fp8_geglu(self, a: int, w: "LinearPtrs", out: int, M: int, a_scale: int,
                  out_scale: int, stream: int) -> None:
        """FP8 ``out`` (M, N/2) = GeGLU(a @ w^T) quantised with ``out_scale``; ``w``'s rows in
        the weight spec's gate/up interleave."""
        self.k.gemm_fp8_geglu(a, w.w, out, M, w.N // 2, w.K, a_scale, w.ws, out_scale,
                              self._ws.data_ptr(), GEMM_WORKSPACE_BYTES, stream,
                              self.geglu_config)

    def bf16(self, a: int, w: "LinearPtrs", d: int, M: int, stream: int, *, c: int = 0,
             gelu: bool = False) -> None:
        opts = self._opts(w.b, c, gelu)
        key = ("bf16", M, w.N, w.K, bool(w.b), bool(c), gelu)
        if self._tune_now(key):
            self.k.gemm_bf16_autotune(a, w.w, d, M, w.N, w.K, stream, b_cycle=self._cycle(w),
                                      max_candidates=self.candidates, **opts)
        else:
            self.k.gemm_bf16(a, w.w, d, M, w.N, w.K, stream, **opts)


@dataclass(frozen=True)
class LinearPtrs:
    w: int
    ws: int  # FP8 weight scale (0 for bf16)
    b: int  # bias (0 for none)
    N: int
    K: int

    @property
    def fp8(self) -> bool:
        return self.ws != 0

    @property
    def shape_key(self) -> tuple[int, int, bool]:
        return self.N, self.K, self.fp8


def weights_by_shape(lin: dict[str, LinearPtrs]) -> dict[tuple[int, int, bool], list[int]]:
    """(N, K, fp8) -> the weight pointers of that shape (what GemmRunner's autotune cycles)."""
    out: dict[tuple[int, int, bool], list[int]] = {}
    for w in lin.values():
        out.setdefault(w.shape_key, []).append(w.w)
    return out


def linear_ptrs(weights: dict[str, torch.Tensor]) -> dict[str, LinearPtrs]:
    """Linear name -> pointers, for every converted 2-D ``<name>.w`` (see weight_spec)."""
    out = {}
    for key, w in weights.items():
        if key.endswith(".w") and w.dim() == 2:
            name = key[:-2]
            ws, b = weights.get(f"{name}.ws"), weights.get(f"{name}.b")
            out[name] = LinearPtrs(w.data_ptr(), ws.data_ptr() if ws is not None else 0,
                                   b.data_ptr() if b is not None else 0, w.shape[0], w.shape[1])
    return out
