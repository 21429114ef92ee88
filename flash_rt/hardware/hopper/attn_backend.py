"""Hopper attention backend.

Measured on the H100 (2026-11-27, full Pi0.5, 2 views, horizon 50, docs/performance.md):
both cached sites run Gemma's single-KV-head attention as two cuBLASLt GEMMs around a
masked softmax (``attention_mqa_gemm``). Against the flash kernel this took the prefix from
4.02 to 3.60 ms and one denoising step from 0.93 to 0.89-0.92 ms (replay 14.96 -> 14.16 ms):
the library's Hopper GEMMs tile the 5696 / 400 query rows better than the mma.sync flash
kernel, which holds one block per SM at head_dim 256. SigLIP (16 heads, head_dim 72, 16 KV
heads) keeps the flash kernel. The decoder split (16) only applies when
``FLASH_RT_DECODER_ATTN=flash`` selects the flash kernel for an A/B run. Pi0's state token
(one query row over the same keys) follows the decoder's choice; not measured on its own.
"""
from flash_rt.hardware.attention import DECODER, ENCODER, GEMM, STATE, AttentionBackend


class HopperAttentionBackend(AttentionBackend):
    hardware = "hopper"
    splits = {ENCODER: 1, DECODER: 16, STATE: 16}
    impl = {ENCODER: GEMM, DECODER: GEMM}
