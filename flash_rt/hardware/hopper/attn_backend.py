"""Hopper attention backend.

Split-K choices measured on the H100 (docs/performance.md, bench/kernels.py): the decoder's
50 queries over ~760 keys need the keys split across blocks to fill 132 SMs; 8, 12 and 16
splits measure within 1-2 us of each other (16: 16.6 us with the merge, 8: 16.7-18.8 us
across runs) and 16 is used. The prefix already has ~700 query rows and is fastest unsplit
(splits 2 / 3: 70.5 / 77.6 us vs 59.4 us at 968 rows).
"""
from flash_rt.hardware.attention import DECODER, ENCODER, AttentionBackend


class HopperAttentionBackend(AttentionBackend):
    hardware = "hopper"
    splits = {ENCODER: 1, DECODER: 16}
