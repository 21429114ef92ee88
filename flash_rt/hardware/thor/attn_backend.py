"""Jetson Thor attention backend.

Thor's GPU has 20 SMs (vs 132 on an H100), so the decoder needs fewer key splits to fill
it; 4 is the starting point, for Pi0's state token (one query row over the same keys) too,
until it is measured on a Thor (no Thor here: untuned).
"""
from flash_rt.hardware.attention import DECODER, ENCODER, STATE, AttentionBackend


class ThorAttentionBackend(AttentionBackend):
    hardware = "thor"
    splits = {ENCODER: 1, DECODER: 4, STATE: 4}
