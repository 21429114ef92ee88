"""How a GPU's pipelines tune their GEMMs: data the shared kernel sequences take (no
hardware branches in them). One instance per GPU in ``hardware/<hw>/tuning.py``, shared by
every model's ``pipeline_<hw>.py`` (the GEMM shapes of Pi0 and Pi0.5 are the same)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    # FP8 GEMMs with K <= this use fast accumulation (no periodic fp32 promotion); 0 = none.
    fast_accum_max_k: int
    autotune: bool  # measure cuBLASLt candidates per shape at load
    autotune_candidates: int = 16  # heuristic candidates timed per shape
    # gate/up GEMM + GeGLU + FP8 quantisation as one GEMM (``gemm_fp8_geglu``, sm_90a) for
    # FP8 gate/up Linears with fast accumulation; else the GEMM writes bf16 and a GeGLU
    # kernel reads it back
    fused_geglu: bool = False
    # its tile / store config (the binding's ``config``: 0 cooperative 128x256, 1 ping-pong
    # 128x128, 2 / 3 the same with 8-byte packed output stores)
    fused_geglu_config: int = 0
