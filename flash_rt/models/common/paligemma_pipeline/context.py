"""What a stage launch reads: kernels, sizes, weights, buffers, scales, staged inputs."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from flash_rt.hardware.attention import AttentionBackend
from flash_rt.models.common.paligemma_pipeline.buffers import Activations, InputPointers, ScaleTable
from flash_rt.models.common.paligemma_pipeline.dims import PaliGemmaDims
from flash_rt.models.common.paligemma_pipeline.gemm import GemmRunner, LinearPtrs
from flash_rt.models.common.paligemma_pipeline.quant import CalibratingQuant, Quantiser


@dataclass
class StageContext:
    """Everything a stage launch needs, as pointers and ints."""

    k: Any  # flash_rt_kernels
    d: PaliGemmaDims
    gemm: GemmRunner
    quant: Quantiser
    attn: AttentionBackend
    lin: dict[str, LinearPtrs]
    w: dict[str, int]  # other weight buffers (norms, embedding, per-step tables) by name
    a: Activations
    scales: ScaleTable
    inp: InputPointers
    stream: int = 0
    # The action expert's layers of one denoising step as one persistent kernel (an object
    # with ``run(ctx, step)``: dec_x -> dec_xn), or None: the model's kernel sequence.
    expert: Any = None

    def scale(self, site: str) -> int:
        return self.scales.scale(site)

    def linear(self, act: int, name: str, site: str, out: int, M: int, *, c: int = 0,
               gelu: bool = False, lin: LinearPtrs | None = None) -> None:
        """``out = act @ W_name^T`` (+bias, GELU, residual) in the Linear's precision;
        ``lin`` replaces the Linear's pointers (e.g. a bias that depends on the step)."""
        lin = self.lin[name] if lin is None else lin
        if lin.fp8:
            self.gemm.fp8(act, lin, out, M, self.scale(site), self.stream, c=c, gelu=gelu)
        else:
            self.gemm.bf16(act, lin, out, M, self.stream, c=c, gelu=gelu)

    def gate_up_geglu(self, act: int, name: str, site: str, down: str, down_site: str,
                      gu: int, M: int, F: int) -> int:
        """GeGLU(act @ W_name^T) (gate/up in the weight spec's interleave); returns the down
        projection's input. One GEMM that quantises its own output where the GEMM runner
        and the quantiser allow (FP8 down input with a static scale), else the GEMM writes
        bf16 into ``gu`` and the quantiser's GeGLU reads it. The fused GEMM writes its FP8
        output into ``gu`` (unused then), never into the quantiser's buffer: that one holds
        ``act``, which the GEMM is still reading."""
        lin, lin_down = self.lin[name], self.lin[down]
        fused = self.quant.fused_output(lin_down, down_site) if self.gemm.fuses_geglu(lin) else None
        if fused is not None:
            self.gemm.fp8_geglu(act, lin, gu, M, self.scale(site), fused[1], self.stream)
            return gu
        self.linear(act, name, site, gu, M)
        return self.quant.geglu(gu, lin_down, down_site, M, F, self.stream)

    def linear_residual(self, act: int, name: str, site: str, x: int, y: int, M: int) -> None:
        """``x += act @ W_name^T (+ bias)``: in the GEMM's epilogue (C = D = x) where cuBLASLt
        has kernels for it; it has none for an FP8 GEMM with BIAS and a C input at SigLIP's
        shapes, so there the output goes to ``y`` and a gated-residual launch (gate = 1) adds
        it."""
        lin = self.lin[name]
        if lin.fp8 and lin.b:
            self.linear(act, name, site, y, M)
            self.k.gated_residual(x, y, self.a["unit_gate"], M, lin.N, M, self.stream)
        else:
            self.linear(act, name, site, x, M, c=x)

    def attend(self, kind: str, layer: int, o_name: str, site: str, bf16_out: int, n: int,
               **kw: Any) -> int:
        """Attention at a site; returns the O projection's input. Where the quantiser and the
        backend allow, the attention kernel writes it in FP8 itself (no quantise launch)."""
        lin = self.lin[o_name]
        fused = self.quant.fused_output(lin, site) if self.attn.fuses_fp8_output(kind) else None
        if fused is not None:
            self.attn.run(kind, layer, out=fused[0], out_scale=fused[1], stream=self.stream, **kw)
            return fused[0]
        self.attn.run(kind, layer, out=bf16_out, stream=self.stream, **kw)
        return self.quant.quantize(bf16_out, lin, site, n, self.stream)


def calibrating(ctx: StageContext) -> StageContext:
    """The same context with the calibration twin's quantiser (see CalibratingQuant); the
    expert runs as the kernel sequence there (it records every site's amax)."""
    return replace(ctx, quant=CalibratingQuant(ctx.k, ctx.scales, ctx.a), expert=None)
