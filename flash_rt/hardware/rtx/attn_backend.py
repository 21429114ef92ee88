"""RTX 5090 (sm_120a) attention backend.

170 SMs but ~99 KiB of opt-in shared memory per block: the kernel picks its smaller tile
for head_dim 256 by itself. The decoder is split 8 ways (Hopper, with 132 SMs, measured 8-16
splits within 1-2 us of each other), and so is Pi0's state token (one query row over the
same keys); untuned until measured on a 5090 (none here).
"""
from flash_rt.hardware.attention import DECODER, ENCODER, STATE, AttentionBackend


class RtxAttentionBackend(AttentionBackend):
    hardware = "rtx_sm120"
    splits = {ENCODER: 1, DECODER: 8, STATE: 8}
