"""Pi0.5 compute path on Hopper (sm_90a: H100 / H200).

The kernel sequence is the shared one (``pipeline_common``); this file fixes Hopper's
choices: the action expert's layers as the kernel sequence (the persistent kernel,
``FLASH_RT_EXPERT=megakernel``, is correct on the H100 but measured slower so far: see
docs/performance.md), its attention backend (GEMM-based MQA attention for the prefix and
the decoder),
cuBLASLt autotuning of every GEMM shape at load over 64 heuristic candidates, and fast FP8
accumulation for K <= 2048 (QKV, O, gate/up). The K = 4096 / 16384 down projections keep
full-precision accumulation: fast there measured no faster in the replay on the H100 and
lowered the worst chunk cosine (0.99924 vs 0.99929).

Forward functions (pointer-only, graph-safe) and their calibration twins::

    siglip_forward(ctx) / siglip_forward(calibrating(ctx))
    prefix_forward(ctx), decoder_step(ctx, step), infer(ctx)
"""
from flash_rt.hardware.hopper.attn_backend import HopperAttentionBackend
from flash_rt.models.pi05.pipeline_common import (  # noqa: F401  (re-exported stages)
    SEQUENCE, HardwarePipeline, Tuning, calibrating, decoder_step, denoise, infer,
    prefix_forward, siglip_forward,
)

PIPELINE = HardwarePipeline(attention_backend=HopperAttentionBackend,
                            tuning=Tuning(fast_accum_max_k=2048, autotune=True,
                                          autotune_candidates=64),
                            expert=SEQUENCE)
