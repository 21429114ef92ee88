"""Device memory of the kernel sequences: activations, the FP8 scale table, and where the
staged inputs live. Everything is allocated once, so the stages only read pointers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from flash_rt.hardware.attention import KEY_ALIGN
from flash_rt.models.common.paligemma_pipeline.dims import PaliGemmaDims

FP8 = torch.float8_e4m3fn
BF16 = torch.bfloat16
# Rows allocated past the last layer of the K/V caches: the GEMM decoder attention reads
# its keys rounded up to a multiple of KEY_ALIGN (finite zeros there, masked out).
KV_TAIL_ROWS = KEY_ALIGN


class ScaleTable:
    """float32 device table of activation scales (and calibration amaxes), by site name.

    ``names`` (one per quantised GEMM input, in table order) come from the model's stages.
    Each site owns 16 bytes (one used float): cuBLASLt reads a GEMM's scale pointers only
    when they are 16-byte aligned (found on the H100: a +4 B pointer makes every FP8
    algorithm fail).
    """

    STRIDE = 4  # floats per site

    def __init__(self, names: list[str], device: Any):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise ValueError("scale site names must be unique")
        n = len(self.names)
        self._scales = torch.ones((n, self.STRIDE), dtype=torch.float32, device=device)
        self._amax = torch.zeros((n, self.STRIDE), dtype=torch.float32, device=device)
        self.scales = self._scales[:, 0]  # (n,) views
        self.amax = self._amax[:, 0]

    def scale(self, site: str) -> int:
        return self._scales.data_ptr() + 4 * self.STRIDE * self.index[site]

    def amax_ptr(self, site: str) -> int:
        return self._amax.data_ptr() + 4 * self.STRIDE * self.index[site]


class Activations:
    """Every intermediate buffer, allocated once (sizes from :class:`PaliGemmaDims`).

    ``pre_*`` hold the prefix rows, ``dec_*`` the action expert's rows (the action tokens;
    Pi0's state token uses their first row before the denoising steps start)."""

    def __init__(self, d: PaliGemmaDims, device: Any):
        ms, L, H = d.image_rows, d.prefix_len, d.horizon
        # every GEMM input: MLP hidden, norm outputs, and the attention outputs (q_dim wide,
        # which exceeds the MLP in configs with many heads and narrow MLPs)
        widest = max(ms * d.sig_mlp, L * d.mlp, H * d.ex_mlp, L * d.width, ms * d.sig_width,
                     L * d.q_dim, H * d.q_dim)
        e = lambda *shape, dtype=BF16: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        kv_rows = d.depth * d.cache_rows
        kv = {n: e(kv_rows + KV_TAIL_ROWS, d.kv_dim)[:kv_rows].view(d.depth, d.cache_rows, d.kv_dim)
              for n in ("k_cache", "v_cache")}
        self.t = {
            "patches": e(ms, d.patch_k), "pos": e(ms, d.sig_width), "sig_x": e(ms, d.sig_width),
            "sig_qkv": e(ms, 3 * d.sig_width), "sig_attn": e(ms, d.sig_width),
            "sig_h": e(ms, d.sig_mlp), "sig_y": e(ms, d.sig_width),
            # adaRMS-style [scale | shift | gate] row with gate = 1: a plain residual add
            "unit_gate": torch.cat([torch.zeros(2 * d.sig_width), torch.ones(d.sig_width)]).to(
                device=device, dtype=torch.float32),
            # GEMM inputs: FP8, or bf16 for bf16 Linears; bf16 scratch for calibration
            "q8": e(widest, dtype=FP8), "a16": e(widest), "scratch": e(widest),
            "pre_x": e(L, d.width), "pre_qkv": e(L, d.qkv_dim), "pre_q": e(L, d.q_dim),
            "pre_attn": e(L, d.q_dim), "pre_gu": e(L, 2 * d.mlp),
            "k_cache": kv["k_cache"], "v_cache": kv["v_cache"],
            "dec_x": e(H, d.ex_width), "dec_qkv": e(H, d.qkv_dim), "dec_q": e(H, d.q_dim),
            "dec_attn": e(H, d.q_dim), "dec_y": e(H, d.ex_width), "dec_gu": e(H, 2 * d.ex_mlp),
            "dec_xn": e(H, d.ex_width),
            "x": e(H, d.action_dim, dtype=torch.float32), "x_bf16": e(H, d.action_dim),
            "v": e(H, d.action_dim), "v_zero": e(H, d.action_dim),
            "amax_ws": e(4, dtype=torch.float32),
            # RoPE (cos, sin) per cache row (every position a prompt can have) and pair
            "rope_cs": e(d.cache_rows, d.head_dim // 2, 2, dtype=torch.float32),
        }

    def rope_table(self, d: PaliGemmaDims) -> dict[str, int]:
        """rope_qkv_split's table arguments (filled once by ``fill_rope_table``)."""
        return {"table": self["rope_cs"], "table_rows": d.cache_rows}

    def fill_rope_table(self, kernels: Any, d: PaliGemmaDims, stream: int) -> None:
        kernels.rope_table(self["rope_cs"], d.cache_rows, d.head_dim, d.theta, stream)

    def __getitem__(self, name: str) -> int:
        return self.t[name].data_ptr()


@dataclass
class InputPointers:
    """Where the frontend's staged inputs live on the device (or, zero-copy, in mapped host
    memory) for the stage functions; image sizes are captured into the graph."""

    images: list[tuple[int, int, int]]  # (ptr to uint8 HxWx3, H, W) per view
    tokens: int  # int32 (text_len,)
    positions: int  # int32 (prefix_len,)
    action_positions: int  # int32 (horizon,) RoPE positions of the action tokens
    key_mask: int  # uint8 (cache_rows,)
    valid_len: int  # int32 (1,): prefix rows through the last valid text token
    # int32 (1,): cache row of the first action token (valid_len + state tokens)
    actions_start: int = 0
    state: int = 0  # bf16 (action_dim,) normalised state (models with a state token)
    state_position: int = 0  # int32 (1,) RoPE position of the state token
