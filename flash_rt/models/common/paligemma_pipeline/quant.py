"""Activation quantisers: how each GEMM's input is produced from the op before it.

:class:`StaticQuant` (production: fused norm/GeGLU kernels writing FP8 with calibrated
static scales) or :class:`CalibratingQuant` (the calibration twin: the same sequence with
bf16 kernels, each activation's running amax recorded and quantised with its own dynamic
scale). Both write the scale the next GEMM reads into the same slot, so the two runs share
every other call.
"""
from __future__ import annotations

from typing import Any

from flash_rt.models.common.paligemma_pipeline.buffers import Activations, ScaleTable


class Quantiser:
    """Produces each GEMM's input activation from the op before it (norm, GeGLU, attention
    output). A Linear stored in bf16 (see the weight spec's precision) gets a bf16
    activation here whatever the subclass; FP8 Linears get the subclass's FP8 handling.
    Every method returns the pointer the GEMM reads."""

    def __init__(self, kernels: Any, scales: ScaleTable, acts: Activations):
        self.k, self.s = kernels, scales
        self.q8, self.a16 = acts["q8"], acts["a16"]

    def layernorm(self, x, w, b, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.layernorm_bf16(x, w, b, self.a16, M, N, eps, stream)
            return self.a16
        return self._layernorm8(x, w, b, site, M, N, eps, stream)

    def rmsnorm(self, x, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.rmsnorm_bf16(x, 0, self.a16, M, N, eps, False, stream)
            return self.a16
        return self._rmsnorm8(x, site, M, N, eps, stream)

    def adarms(self, x, mod, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.adarms_bf16(x, mod, self.a16, M, N, eps, M, stream)
            return self.a16
        return self._adarms8(x, mod, site, M, N, eps, stream)

    def gated_adarms(self, x, y, gate_mod, norm_mod, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.gated_residual(x, y, gate_mod, M, N, M, stream)
            return self.adarms(x, norm_mod, lin, site, M, N, eps, stream)
        return self._gated_adarms8(x, y, gate_mod, norm_mod, site, M, N, eps, stream)

    def quantize(self, x, lin, site, n, stream) -> int:
        return self._quantize8(x, site, n, stream) if lin.fp8 else x

    def fused_output(self, lin, site) -> tuple[int, int] | None:
        """(FP8 buffer, scale pointer) when the kernel producing ``lin``'s input may quantise
        its own output with a static scale; None: it writes bf16 and :meth:`quantize` runs."""
        return None

    def geglu(self, gu, lin, site, M, F, stream) -> int:
        if not lin.fp8:
            self.k.geglu_bf16(gu, self.a16, M, F, stream)
            return self.a16
        return self._geglu8(gu, site, M, F, stream)


class StaticQuant(Quantiser):
    """Production: fused kernels quantise with the calibrated static scale of each site."""

    def fused_output(self, lin, site):
        return (self.q8, self.s.scale(site)) if lin.fp8 else None

    def _layernorm8(self, x, w, b, site, M, N, eps, stream):
        self.k.layernorm_fp8(x, w, b, self.q8, self.s.scale(site), M, N, eps, stream)
        return self.q8

    def _rmsnorm8(self, x, site, M, N, eps, stream):
        self.k.rmsnorm_fp8(x, 0, self.q8, self.s.scale(site), M, N, eps, False, stream)
        return self.q8

    def _adarms8(self, x, mod, site, M, N, eps, stream):
        self.k.adarms_fp8(x, mod, self.q8, self.s.scale(site), M, N, eps, M, stream)
        return self.q8

    def _gated_adarms8(self, x, y, gate_mod, norm_mod, site, M, N, eps, stream):
        self.k.gated_residual_adarms_fp8(x, y, gate_mod, norm_mod, self.q8, self.s.scale(site),
                                         M, N, eps, M, stream)
        return self.q8

    def _quantize8(self, x, site, n, stream):
        self.k.quantize_fp8_static(x, self.q8, self.s.scale(site), n, stream)
        return self.q8

    def _geglu8(self, gu, site, M, F, stream):
        self.k.geglu_fp8(gu, self.q8, self.s.scale(site), M, F, stream)
        return self.q8


class CalibratingQuant(Quantiser):
    """Calibration twin: bf16 kernels, then record the activation's amax and quantise it
    with its own (dynamic) scale, written to the slot the next GEMM reads."""

    def __init__(self, kernels: Any, scales: ScaleTable, acts: Activations):
        super().__init__(kernels, scales, acts)
        self.scratch, self.ws = acts["scratch"], acts["amax_ws"]

    def _record(self, x, site, n, stream):
        self.k.amax_update(x, n, self.s.amax_ptr(site), stream)
        self.k.quantize_fp8_dynamic(x, self.q8, self.s.scale(site), self.ws, n, stream)
        return self.q8

    def _layernorm8(self, x, w, b, site, M, N, eps, stream):
        self.k.layernorm_bf16(x, w, b, self.scratch, M, N, eps, stream)
        return self._record(self.scratch, site, M * N, stream)

    def _rmsnorm8(self, x, site, M, N, eps, stream):
        self.k.rmsnorm_bf16(x, 0, self.scratch, M, N, eps, False, stream)
        return self._record(self.scratch, site, M * N, stream)

    def _adarms8(self, x, mod, site, M, N, eps, stream):
        self.k.adarms_bf16(x, mod, self.scratch, M, N, eps, M, stream)
        return self._record(self.scratch, site, M * N, stream)

    def _gated_adarms8(self, x, y, gate_mod, norm_mod, site, M, N, eps, stream):
        self.k.gated_residual(x, y, gate_mod, M, N, M, stream)
        return self._adarms8(x, norm_mod, site, M, N, eps, stream)

    def _quantize8(self, x, site, n, stream):
        return self._record(x, site, n, stream)

    def _geglu8(self, gu, site, M, F, stream):
        self.k.geglu_bf16(gu, self.scratch, M, F, stream)
        return self._record(self.scratch, site, M * F, stream)
