"""Hopper attention backend.

Split-K choices measured on the H100 (docs/performance.md, bench/kernels.py): the decoder's
50 queries over ~760 keys fill 132 SMs only when the keys are split 8 ways (19 us vs SDPA's
29 us); the prefix already has ~700 query rows and is fastest unsplit.
"""
from flash_rt.hardware.attention import DECODER, ENCODER, AttentionBackend


class HopperAttentionBackend(AttentionBackend):
    hardware = "hopper"
    splits = {ENCODER: 1, DECODER: 8}
