"""Attention spec (the sites a model attends at) and the backend interface.

A model declares its attention *sites* once (``AttentionSpec``: Pi0.5's SigLIP, encoder,
decoder; GR00T's vision, LLM, VL self, DiT self, DiT cross; with their layer counts, heads
and maximum lengths); a per-hardware backend turns a site
call into kernel launches. Pipelines call ``attn.run(site, layer, ...)`` and never a kernel
directly, so supporting a new GPU or a new attention kernel is one backend file.

Backends own their scratch (split-K workspaces) sized from the spec at construction, so
``run`` never allocates and is safe inside a CUDA Graph.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

SIGLIP, ENCODER, DECODER = "siglip", "encoder", "decoder"
# GR00T N1.7: the Qwen3-VL vision tower (per view), the causal Qwen3 LLM, the action
# head's VL self-attention, and the DiT's self- and cross-attention blocks.
VISION, LLM, VL_SELF, DIT_SELF, DIT_CROSS = "vision", "llm", "vl_self", "dit_self", "dit_cross"
SITE_KINDS = (SIGLIP, ENCODER, DECODER, VISION, LLM, VL_SELF, DIT_SELF, DIT_CROSS)
# Algorithms for the cached (encoder, decoder) sites: the flash kernel (split-K per
# `splits`), or, for one KV head, two cuBLASLt GEMMs around a masked softmax
# (attention_mqa_gemm). FLASH_RT_ENCODER_ATTN / FLASH_RT_DECODER_ATTN override a backend's
# choice (development knobs for A/B benchmarks, read when the backend is built).
FLASH, GEMM = "flash", "gemm"
IMPL_ENV = {"encoder": "FLASH_RT_ENCODER_ATTN", "decoder": "FLASH_RT_DECODER_ATTN"}
KEY_ALIGN = 16  # the GEMM path's keys, rounded up (pipeline_common.KV_TAIL_ROWS covers it)
GEMM_WORKSPACE_BYTES = 4 << 20  # cuBLASLt scratch of the GEMM path


@dataclass(frozen=True)
class SiteSpec:
    """One distinct attention shape of a model."""

    name: str  # one of SITE_KINDS
    layer_count: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_q_len: int  # queries per call (per view for SigLIP)
    max_kv_len: int  # keys (cache rows for the decoder)
    batch: int = 1  # independent sequences per call (SigLIP: views)

    def __post_init__(self) -> None:
        if self.name not in SITE_KINDS:
            raise ValueError(f"unknown attention site {self.name!r}; expected one of {SITE_KINDS}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"site {self.name}: {self.num_heads} heads do not group over "
                             f"{self.num_kv_heads} kv heads")

    @property
    def scale(self) -> float:
        return self.head_dim ** -0.5


@dataclass(frozen=True)
class AttentionSpec:
    sites: tuple[SiteSpec, ...]

    def site(self, name: str) -> SiteSpec:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"attention site {name!r} not declared; declared: "
                       f"{[s.name for s in self.sites]}")


class AttentionBackend:
    """Kernel dispatch for the declared sites.

    Subclasses (one file per hardware) choose the split-K factors; ``splits`` maps a site
    name to the number of key splits (1 = none). The launch code is shared here because
    the kernels are the same portable ones on every GPU we build for.
    """

    hardware = ""
    splits: dict[str, int] = {}
    impl: dict[str, str] = {}  # ENCODER / DECODER -> FLASH (default) or GEMM

    def __init__(self, spec: AttentionSpec, kernels: Any, device: Any):
        import torch

        self.spec = spec
        self.k = kernels
        self.impl = {site: os.environ.get(env, self.impl.get(site, FLASH))
                     for site, env in IMPL_ENV.items()}
        for site, choice in self.impl.items():
            if choice not in (FLASH, GEMM):
                raise ValueError(f"unknown {site} attention {choice!r}; expected {FLASH!r} or "
                                 f"{GEMM!r}")
        self._runners: dict[str, Callable[..., None]] = {
            SIGLIP: self._siglip,
            ENCODER: self._encoder_gemm if self.impl[ENCODER] == GEMM else self._encoder,
            DECODER: self._decoder_gemm if self.impl[DECODER] == GEMM else self._decoder}
        need = max((kernels.attention_workspace_bytes(s.batch, s.max_q_len, s.num_heads,
                                                      s.head_dim, self.site_splits(s.name))
                    for s in spec.sites), default=0)
        self._keys_pad: dict[str, int] = {}
        for name in (ENCODER, DECODER):
            if self.impl[name] != GEMM:
                continue
            site = spec.site(name)
            if site.num_kv_heads != 1 or site.batch != 1:
                raise ValueError(f"the GEMM {name} attention needs one KV head and batch 1")
            self._keys_pad[name] = -(-site.max_kv_len // KEY_ALIGN) * KEY_ALIGN
            need = max(need, kernels.attention_mqa_gemm_workspace_bytes(
                site.max_q_len * site.num_heads, self._keys_pad[name]))
        self._gemm_ws = torch.empty(GEMM_WORKSPACE_BYTES if self._keys_pad else 16,
                                    dtype=torch.uint8, device=device)
        self._ws = torch.empty(max(need, 16), dtype=torch.uint8, device=device)

    def site_splits(self, name: str) -> int:
        return int(self.splits.get(name, 1))

    def fuses_fp8_output(self, site: str) -> bool:
        """Whether this site writes its FP8 output itself (``out_scale``): only split-K sites,
        whose combine kernel quantises for free (the decoder saves a quantise launch). An FP8
        branch in the single-pass epilogue measured 27 % slower on the H100 (prefix: 68.6 vs
        54.1 us, against a 2.7 us quantise kernel), so the kernels accept out_scale only
        with splits >= 2."""
        if self.impl.get(site) == GEMM:
            return False  # the GEMM path writes bf16
        return self.site_splits(site) > 1

    def run(self, site: str, layer: int, **kw: Any) -> None:
        s = self.spec.site(site)
        if not 0 <= layer < s.layer_count:
            raise IndexError(f"site {site}: layer {layer} outside [0, {s.layer_count})")
        self._runners[site](s, **kw)

    # -- launches ----------------------------------------------------------------------------
    # ``out_scale``: 0 writes bf16; a float32 scale pointer writes FP8 quantised with it (the
    # static input scale of the GEMM that reads the output): split-K sites only.
    def _siglip(self, s: SiteSpec, *, qkv: int, out: int, views: int, stream: int) -> None:
        self.k.attention_siglip(qkv, out, views, s.max_q_len, s.num_heads, s.head_dim, stream)

    def _encoder(self, s: SiteSpec, *, q: int, k_cache: int, v_cache: int, out: int,
                 valid_len: int, key_mask: int, stream: int, out_scale: int = 0) -> None:
        self.k.attention_prefix(q, k_cache, v_cache, out, s.max_q_len, s.num_heads,
                                s.num_kv_heads, s.head_dim, valid_len, s.scale, stream,
                                key_mask=key_mask, splits=self.site_splits(ENCODER),
                                workspace=self._ws.data_ptr(), workspace_bytes=self._ws.numel(),
                                out_scale=out_scale)

    def _decoder(self, s: SiteSpec, *, q: int, k_cache: int, v_cache: int, out: int,
                 prefix_len: int, key_mask: int, stream: int, out_scale: int = 0) -> None:
        self.k.attention_decoder(q, k_cache, v_cache, out, s.max_q_len, s.max_kv_len,
                                 s.num_heads, s.num_kv_heads, s.head_dim, prefix_len, s.scale,
                                 stream, key_mask=key_mask, splits=self.site_splits(DECODER),
                                 workspace=self._ws.data_ptr(),
                                 workspace_bytes=self._ws.numel(), out_scale=out_scale)

    def _mqa_gemm(self, s: SiteSpec, q: int, k_cache: int, v_cache: int, out: int, n_keys: int,
                  keys_add: int, key_mask: int, stream: int, out_scale: int) -> None:
        if out_scale:
            raise ValueError("the GEMM attention path writes bf16 (see fuses_fp8_output)")
        self.k.attention_mqa_gemm(q, k_cache, v_cache, out, s.max_q_len, s.max_kv_len,
                                  self._keys_pad[s.name], s.num_heads, s.head_dim, n_keys,
                                  s.scale, stream, keys_add=keys_add, key_mask=key_mask,
                                  workspace=self._ws.data_ptr(), workspace_bytes=self._ws.numel(),
                                  gemm_workspace=self._gemm_ws.data_ptr(),
                                  gemm_workspace_bytes=self._gemm_ws.numel())

    def _encoder_gemm(self, s: SiteSpec, *, q: int, k_cache: int, v_cache: int, out: int,
                      valid_len: int, key_mask: int, stream: int, out_scale: int = 0) -> None:
        self._mqa_gemm(s, q, k_cache, v_cache, out, valid_len, 0, key_mask, stream, out_scale)

    def _decoder_gemm(self, s: SiteSpec, *, q: int, k_cache: int, v_cache: int, out: int,
                      prefix_len: int, key_mask: int, stream: int, out_scale: int = 0) -> None:
        self._mqa_gemm(s, q, k_cache, v_cache, out, prefix_len, s.max_q_len, key_mask, stream,
                       out_scale)
