"""The Pi0.5 kernel sequence every GPU path shares (pointer-only, CUDA-Graph safe).

Each stage function reads raw device pointers from a :class:`StageContext` and launches
``flash_rt_kernels`` on ``ctx.stream``; nothing here allocates, synchronises or reads a
tensor value, so one call of :func:`infer` can be captured into a CUDA Graph and replayed
with new inputs written into the same buffers. The hardware files
(``pipeline_hopper.py``, ``pipeline_thor.py``, ``pipeline_rtx.py``) choose the attention
backend and GEMM tuning and import these functions; they never branch on hardware here.

Activation quantisation goes through a quantiser object: :class:`StaticQuant` (production:
fused norm/GeGLU kernels writing FP8 with calibrated static scales) or
:class:`CalibratingQuant` (the calibration twin: the same sequence with bf16 kernels, each
activation's running amax recorded and quantised with its own dynamic scale). Both write
the scale the next GEMM reads into the same slot, so the two runs share every other call.

Row layout of the prefix (``L = views * 256 + max_token_len`` rows): view 0 image tokens,
view 1, ..., then text tokens right-padded. A device int32 ``valid_len`` (rows through the
last valid text token) and a uint8 ``key_mask`` (masked views, padding) make one graph serve
every prompt length; the action expert's own K/V go to cache rows
``[valid_len, valid_len + horizon)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from flash_rt.configs import ModelConfig
from flash_rt.hardware.attention import (DECODER, ENCODER, KEY_ALIGN, SIGLIP, AttentionBackend,
                                        AttentionSpec, SiteSpec)

FP8 = torch.float8_e4m3fn
BF16 = torch.bfloat16
GEMM_WORKSPACE_BYTES = 32 << 20
AUTOTUNE_COLD_ENV = "FLASH_RT_AUTOTUNE_COLD"
FAST_ACCUM_ENV = "FLASH_RT_FAST_ACCUM_MAX_K"
CANDIDATES_ENV = "FLASH_RT_AUTOTUNE_CANDIDATES"
# How the action expert's layers run: the kernel sequence below, or the persistent kernel
# (expert_megakernel.py, Hopper). FLASH_RT_EXPERT overrides a pipeline's choice (A/B knob).
SEQUENCE, MEGAKERNEL = "sequence", "megakernel"
EXPERT_ENV = "FLASH_RT_EXPERT"
# Rows allocated past the last layer of the K/V caches: the GEMM decoder attention reads
# its keys rounded up to a multiple of KEY_ALIGN (finite zeros there, masked out).
KV_TAIL_ROWS = KEY_ALIGN


@dataclass(frozen=True)
class Pi05Dims:
    """Every size the kernel sequence needs, derived once from the config."""

    views: int
    tokens_per_view: int
    patch_k: int
    image_size: int
    patch_size: int
    sig_width: int
    sig_heads: int
    sig_mlp: int
    sig_depth: int
    sig_eps: float
    text_len: int
    width: int  # prefix LM
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int
    depth: int
    eps: float
    ex_width: int
    ex_mlp: int
    ex_eps: float
    horizon: int
    action_dim: int
    steps: int
    theta: float
    vocab: int

    @classmethod
    def from_config(cls, cfg: ModelConfig, patch_k: int) -> "Pi05Dims":
        s, p, e = cfg.siglip, cfg.prefix, cfg.expert
        return cls(views=cfg.num_views, tokens_per_view=cfg.tokens_per_view, patch_k=patch_k,
                   image_size=s.image_size, patch_size=s.patch_size, sig_width=s.width,
                   sig_heads=s.num_heads, sig_mlp=s.mlp_dim, sig_depth=s.depth,
                   sig_eps=s.layer_norm_eps, text_len=cfg.max_token_len, width=p.width,
                   heads=p.num_heads, kv_heads=p.num_kv_heads, head_dim=p.head_dim,
                   mlp=p.mlp_dim, depth=p.depth, eps=p.rms_norm_eps, ex_width=e.width,
                   ex_mlp=e.mlp_dim, ex_eps=e.rms_norm_eps, horizon=cfg.horizon,
                   action_dim=cfg.action_dim, steps=cfg.num_steps, theta=cfg.rope_theta,
                   vocab=p.vocab_size)

    @property
    def image_rows(self) -> int:
        return self.views * self.tokens_per_view

    @property
    def prefix_len(self) -> int:
        return self.image_rows + self.text_len

    @property
    def cache_rows(self) -> int:
        return self.prefix_len + self.horizon

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def mod_rows(self) -> int:
        return 2 * self.depth + 1


def attention_spec(d: Pi05Dims) -> AttentionSpec:
    """The three attention sites of Pi0.5 (the seed's make_pi05_attention_spec)."""
    return AttentionSpec(sites=(
        SiteSpec(SIGLIP, d.sig_depth, d.sig_heads, d.sig_heads, d.sig_width // d.sig_heads,
                 d.tokens_per_view, d.tokens_per_view, batch=d.views),
        SiteSpec(ENCODER, d.depth, d.heads, d.kv_heads, d.head_dim, d.prefix_len, d.prefix_len),
        SiteSpec(DECODER, d.depth, d.heads, d.kv_heads, d.head_dim, d.horizon, d.cache_rows),
    ))


def scale_sites(d: Pi05Dims) -> list[str]:
    """Names of every FP8 activation scale, in table order: one per quantised GEMM input
    (SigLIP and prefix per layer, the action expert per layer *and* denoising step)."""
    sites = [f"sig.{i}.{n}" for i in range(d.sig_depth) for n in ("qkv", "o", "fc1", "fc2")]
    sites.append("proj")
    for i in range(d.depth):
        sites += [f"lm.{i}.qkv"] + ([] if i == d.depth - 1 else
                                    [f"lm.{i}.o", f"lm.{i}.gate_up", f"lm.{i}.down"])
    sites += [f"ex.{k}.{i}.{n}" for k in range(d.steps) for i in range(d.depth)
              for n in ("qkv", "o", "gate_up", "down")]
    return sites


class ScaleTable:
    """float32 device table of activation scales (and calibration amaxes), by site name.

    Each site owns 16 bytes (one used float): cuBLASLt reads a GEMM's scale pointers only
    when they are 16-byte aligned (found on the H100: a +4 B pointer makes every FP8
    algorithm fail).
    """

    STRIDE = 4  # floats per site

    def __init__(self, d: Pi05Dims, device: Any):
        self.names = scale_sites(d)
        self.index = {n: i for i, n in enumerate(self.names)}
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
    """Every intermediate buffer, allocated once (sizes from :class:`Pi05Dims`)."""

    def __init__(self, d: Pi05Dims, device: Any):
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

    def rope_table(self, d: Pi05Dims) -> dict[str, int]:
        """rope_qkv_split's table arguments (filled once by ``fill_rope_table``)."""
        return {"table": self["rope_cs"], "table_rows": d.cache_rows}

    def fill_rope_table(self, kernels: Any, d: Pi05Dims, stream: int) -> None:
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
    dec_positions: int  # int32 (horizon,)
    key_mask: int  # uint8 (cache_rows,)
    valid_len: int  # int32 (1,)


class GemmRunner:
    """GEMM launches with a shared cuBLASLt workspace; in ``tuning`` mode the first call of
    each distinct shape/config is autotuned (fastest measured kernel is then cached).

    The autotune cycles through every weight of the GEMM's shape (``same_shape``: the other
    layers'), so candidates are ranked with weights streaming from HBM as in the forward
    pass, not sitting in L2. FP8 GEMMs with K <= ``tuning.fast_accum_max_k`` use fast
    accumulation. Development knobs for A/B runs, read here: ``FLASH_RT_AUTOTUNE_COLD=0``
    (time one weight), ``FLASH_RT_FAST_ACCUM_MAX_K``, ``FLASH_RT_AUTOTUNE_CANDIDATES``."""

    def __init__(self, kernels: Any, device: Any, tuning: "Tuning",
                 same_shape: dict[tuple[int, int, bool], list[int]] | None = None):
        self.k = kernels
        self.fast_accum_max_k = int(os.environ.get(FAST_ACCUM_ENV, tuning.fast_accum_max_k))
        self.candidates = int(os.environ.get(CANDIDATES_ENV, tuning.autotune_candidates))
        self._ws = torch.empty(GEMM_WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        self.tuning = False
        self._tuned: set[tuple] = set()
        cold = os.environ.get(AUTOTUNE_COLD_ENV, "1") != "0"
        self._same_shape = (same_shape or {}) if cold else {}

    def _cycle(self, w: "LinearPtrs") -> list[int]:
        return [p for p in self._same_shape.get(w.shape_key, []) if p != w.w]

    def _opts(self, bias: int, c: int, gelu: bool) -> dict:
        e = self.k.Epilogue
        epilogue = ((e.BIAS_GELU if gelu else e.BIAS) if bias else (e.GELU if gelu else e.NONE))
        return dict(bias=bias, c=c, workspace=self._ws.data_ptr(),
                    workspace_bytes=GEMM_WORKSPACE_BYTES, epilogue=epilogue)

    def _tune_now(self, key: tuple) -> bool:
        if not self.tuning or key in self._tuned:
            return False
        self._tuned.add(key)
        return True

    def fp8(self, a: int, w: "LinearPtrs", d: int, M: int, a_scale: int, stream: int, *,
            c: int = 0, gelu: bool = False) -> None:
        opts = self._opts(w.b, c, gelu)
        opts["fast_accum"] = w.K <= self.fast_accum_max_k
        key = ("fp8", M, w.N, w.K, bool(w.b), bool(c), gelu)
        if self._tune_now(key):
            self.k.gemm_fp8_autotune(a, w.w, d, M, w.N, w.K, a_scale, w.ws, stream,
                                     b_cycle=self._cycle(w), max_candidates=self.candidates,
                                     **opts)
        else:
            self.k.gemm_fp8(a, w.w, d, M, w.N, w.K, a_scale, w.ws, stream, **opts)

    def bf16(self, a: int, w: "LinearPtrs", d: int, M: int, stream: int, *, c: int = 0,
             gelu: bool = False) -> None:
        opts = self._opts(w.b, c, gelu)
        key = ("bf16", M, w.N, w.K, bool(w.b), bool(c), gelu)
        if self._tune_now(key):
            self.k.gemm_bf16_autotune(a, w.w, d, M, w.N, w.K, stream, b_cycle=self._cycle(w),
                                      max_candidates=self.candidates, **opts)
        else:
            self.k.gemm_bf16(a, w.w, d, M, w.N, w.K, stream, **opts)


@dataclass(frozen=True)
class LinearPtrs:
    w: int
    ws: int  # FP8 weight scale (0 for bf16)
    b: int  # bias (0 for none)
    N: int
    K: int

    @property
    def fp8(self) -> bool:
        return self.ws != 0

    @property
    def shape_key(self) -> tuple[int, int, bool]:
        return self.N, self.K, self.fp8


def weights_by_shape(lin: dict[str, LinearPtrs]) -> dict[tuple[int, int, bool], list[int]]:
    """(N, K, fp8) -> the weight pointers of that shape (what GemmRunner's autotune cycles)."""
    out: dict[tuple[int, int, bool], list[int]] = {}
    for w in lin.values():
        out.setdefault(w.shape_key, []).append(w.w)
    return out


def linear_ptrs(weights: dict[str, torch.Tensor]) -> dict[str, LinearPtrs]:
    """Linear name -> pointers, for every converted 2-D ``<name>.w`` (see weight_spec)."""
    out = {}
    for key, w in weights.items():
        if key.endswith(".w") and w.dim() == 2:
            name = key[:-2]
            ws, b = weights.get(f"{name}.ws"), weights.get(f"{name}.b")
            out[name] = LinearPtrs(w.data_ptr(), ws.data_ptr() if ws is not None else 0,
                                   b.data_ptr() if b is not None else 0, w.shape[0], w.shape[1])
    return out


class _Quant:
    """Produces each GEMM's input activation from the op before it (norm, GeGLU, attention
    output). A Linear stored in bf16 (see the weight spec's precision) gets a bf16
    activation here whatever the subclass; FP8 Linears get the subclass's FP8 handling.
    Every method returns the pointer the GEMM reads."""

    def __init__(self, kernels: Any, scales: ScaleTable, acts: "Activations"):
        self.k, self.s = kernels, scales
        self.q8, self.a16 = acts["q8"], acts["a16"]

    def layernorm(self, x, w, b, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.layernorm_bf16(x, w, b, self.a16, M, N, eps, stream)
            return self.a16
        return self._layernorm8(x, w, b, site, M, N, eps, stream)

    def rmsnorm(self, x, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.rmsnorm_bf16(x, 0, self.a16, M, N, eps, False, stream)
            return self.a16
        return self._rmsnorm8(x, site, M, N, eps, stream)

    def adarms(self, x, mod, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.adarms_bf16(x, mod, self.a16, M, N, eps, M, stream)
            return self.a16
        return self._adarms8(x, mod, site, M, N, eps, stream)

    def gated_adarms(self, x, y, gate_mod, norm_mod, lin, site, M, N, eps, stream) -> int:
        if not lin.fp8:
            self.k.gated_residual(x, y, gate_mod, M, N, M, stream)
            return self.adarms(x, norm_mod, lin, site, M, N, eps, stream)
        return self._gated_adarms8(x, y, gate_mod, norm_mod, site, M, N, eps, stream)

    def quantize(self, x, lin, site, n, stream) -> int:
        return self._quantize8(x, site, n, stream) if lin.fp8 else x

    def fused_output(self, lin, site) -> tuple[int, int] | None:
        """(FP8 buffer, scale pointer) when the kernel producing ``lin``'s input may quantise
        its own output with a static scale; None: it writes bf16 and :meth:`quantize` runs."""
        return None

    def geglu(self, gu, lin, site, M, F, stream) -> int:
        if not lin.fp8:
            self.k.geglu_bf16(gu, self.a16, M, F, stream)
            return self.a16
        return self._geglu8(gu, site, M, F, stream)


class StaticQuant(_Quant):
    """Production: fused kernels quantise with the calibrated static scale of each site."""

    def fused_output(self, lin, site):
        return (self.q8, self.s.scale(site)) if lin.fp8 else None

    def _layernorm8(self, x, w, b, site, M, N, eps, stream):
        self.k.layernorm_fp8(x, w, b, self.q8, self.s.scale(site), M, N, eps, stream)
        return self.q8

    def _rmsnorm8(self, x, site, M, N, eps, stream):
        self.k.rmsnorm_fp8(x, 0, self.q8, self.s.scale(site), M, N, eps, False, stream)
        return self.q8

    def _adarms8(self, x, mod, site, M, N, eps, stream):
        self.k.adarms_fp8(x, mod, self.q8, self.s.scale(site), M, N, eps, M, stream)
        return self.q8

    def _gated_adarms8(self, x, y, gate_mod, norm_mod, site, M, N, eps, stream):
        self.k.gated_residual_adarms_fp8(x, y, gate_mod, norm_mod, self.q8, self.s.scale(site),
                                         M, N, eps, M, stream)
        return self.q8

    def _quantize8(self, x, site, n, stream):
        self.k.quantize_fp8_static(x, self.q8, self.s.scale(site), n, stream)
        return self.q8

    def _geglu8(self, gu, site, M, F, stream):
        self.k.geglu_fp8(gu, self.q8, self.s.scale(site), M, F, stream)
        return self.q8


class CalibratingQuant(_Quant):
    """Calibration twin: bf16 kernels, then record the activation's amax and quantise it
    with its own (dynamic) scale, written to the slot the next GEMM reads."""

    def __init__(self, kernels: Any, scales: ScaleTable, acts: "Activations"):
        super().__init__(kernels, scales, acts)
        self.scratch, self.ws = acts["scratch"], acts["amax_ws"]

    def _record(self, x, site, n, stream):
        self.k.amax_update(x, n, self.s.amax_ptr(site), stream)
        self.k.quantize_fp8_dynamic(x, self.q8, self.s.scale(site), self.ws, n, stream)
        return self.q8

    def _layernorm8(self, x, w, b, site, M, N, eps, stream):
        self.k.layernorm_bf16(x, w, b, self.scratch, M, N, eps, stream)
        return self._record(self.scratch, site, M * N, stream)

    def _rmsnorm8(self, x, site, M, N, eps, stream):
        self.k.rmsnorm_bf16(x, 0, self.scratch, M, N, eps, False, stream)
        return self._record(self.scratch, site, M * N, stream)

    def _adarms8(self, x, mod, site, M, N, eps, stream):
        self.k.adarms_bf16(x, mod, self.scratch, M, N, eps, M, stream)
        return self._record(self.scratch, site, M * N, stream)

    def _gated_adarms8(self, x, y, gate_mod, norm_mod, site, M, N, eps, stream):
        self.k.gated_residual(x, y, gate_mod, M, N, M, stream)
        return self._adarms8(x, norm_mod, site, M, N, eps, stream)

    def _quantize8(self, x, site, n, stream):
        return self._record(x, site, n, stream)

    def _geglu8(self, gu, site, M, F, stream):
        self.k.geglu_bf16(gu, self.scratch, M, F, stream)
        return self._record(self.scratch, site, M * F, stream)


@dataclass
class StageContext:
    """Everything a stage launch needs, as pointers and ints."""

    k: Any  # flash_rt_kernels
    d: Pi05Dims
    gemm: GemmRunner
    quant: _Quant
    attn: AttentionBackend
    lin: dict[str, LinearPtrs]
    w: dict[str, int]  # other weight buffers (norms, embedding, mod table) by name
    a: Activations
    scales: ScaleTable
    inp: InputPointers
    stream: int = 0
    expert: Any = None  # ExpertMegakernel running the expert's layers, or None: the sequence

    def scale(self, site: str) -> int:
        return self.scales.scale(site)

    def linear(self, act: int, name: str, site: str, out: int, M: int, *, c: int = 0,
               gelu: bool = False) -> None:
        """``out = act @ W_name^T`` (+bias, GELU, residual) in the Linear's precision."""
        lin = self.lin[name]
        if lin.fp8:
            self.gemm.fp8(act, lin, out, M, self.scale(site), self.stream, c=c, gelu=gelu)
        else:
            self.gemm.bf16(act, lin, out, M, self.stream, c=c, gelu=gelu)

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

    def mod(self, step: int, row: int) -> int:
        """Pointer to the adaRMS [scale | shift | gate] row of (step, norm row)."""
        d = self.d
        return self.w["ex.mod"] + 4 * (step * d.mod_rows + row) * 3 * d.ex_width


def siglip_forward(ctx: StageContext) -> None:
    """Camera uint8 -> resize/normalise/im2col -> SigLIP -> projector -> prefix image rows."""
    k, d, a, q, s = ctx.k, ctx.d, ctx.a, ctx.quant, ctx.stream
    ms, W = d.image_rows, d.sig_width
    for v, (src, h, w) in enumerate(ctx.inp.images):
        k.image_patches(src, a["patches"] + 2 * v * d.tokens_per_view * d.patch_k, h, w,
                        d.image_size, d.patch_size, d.patch_k, s)
    ctx.linear(a["patches"], "sig.patch", "", a["sig_x"], ms, c=a["pos"])
    for i in range(d.sig_depth):
        p = f"sig.{i}"
        act = q.layernorm(a["sig_x"], ctx.w[f"{p}.ln1.w"], ctx.w[f"{p}.ln1.b"],
                          ctx.lin[f"{p}.qkv"], f"{p}.qkv", ms, W, d.sig_eps, s)
        ctx.linear(act, f"{p}.qkv", f"{p}.qkv", a["sig_qkv"], ms)
        act = ctx.attend(SIGLIP, i, f"{p}.o", f"{p}.o", a["sig_attn"], ms * W, qkv=a["sig_qkv"],
                         views=d.views)
        ctx.linear_residual(act, f"{p}.o", f"{p}.o", a["sig_x"], a["sig_y"], ms)
        act = q.layernorm(a["sig_x"], ctx.w[f"{p}.ln2.w"], ctx.w[f"{p}.ln2.b"],
                          ctx.lin[f"{p}.fc1"], f"{p}.fc1", ms, W, d.sig_eps, s)
        ctx.linear(act, f"{p}.fc1", f"{p}.fc1", a["sig_h"], ms, gelu=True)
        act = q.quantize(a["sig_h"], ctx.lin[f"{p}.fc2"], f"{p}.fc2", ms * d.sig_mlp, s)
        ctx.linear_residual(act, f"{p}.fc2", f"{p}.fc2", a["sig_x"], a["sig_y"], ms)
    act = q.layernorm(a["sig_x"], ctx.w["sig.post.w"], ctx.w["sig.post.b"], ctx.lin["proj"],
                      "proj", ms, W, d.sig_eps, s)
    ctx.linear(act, "proj", "proj", a["pre_x"], ms)


def prefix_forward(ctx: StageContext) -> None:
    """Text embedding + the Gemma prefix; leaves every layer's post-RoPE K/V in the cache."""
    k, d, a, q, s = ctx.k, ctx.d, ctx.a, ctx.quant, ctx.stream
    L, W = d.prefix_len, d.width
    k.embed_gather(ctx.inp.tokens, ctx.w["lm.embed"], a["pre_x"] + 2 * d.image_rows * W,
                   d.text_len, W, d.vocab, float(W) ** 0.5, s)
    kv_layer = 2 * d.cache_rows * d.kv_dim
    for i in range(d.depth):
        p = f"lm.{i}"
        kc, vc = a["k_cache"] + i * kv_layer, a["v_cache"] + i * kv_layer
        act = q.rmsnorm(a["pre_x"], ctx.lin[f"{p}.qkv"], f"{p}.qkv", L, W, d.eps, s)
        ctx.linear(act, f"{p}.qkv", f"{p}.qkv", a["pre_qkv"], L)
        k.rope_qkv_split(a["pre_qkv"], ctx.inp.positions, a["pre_q"], kc, vc, 0, L, d.heads,
                         d.kv_heads, d.head_dim, d.cache_rows, d.theta, 1.0, s,
                         **a.rope_table(d))
        if i == d.depth - 1:
            break  # the last layer only contributes its K/V
        act = ctx.attend(ENCODER, i, f"{p}.o", f"{p}.o", a["pre_attn"], L * d.q_dim,
                         q=a["pre_q"], k_cache=kc, v_cache=vc, valid_len=ctx.inp.valid_len,
                         key_mask=ctx.inp.key_mask)
        ctx.linear(act, f"{p}.o", f"{p}.o", a["pre_x"], L, c=a["pre_x"])
        act = q.rmsnorm(a["pre_x"], ctx.lin[f"{p}.gate_up"], f"{p}.gate_up", L, W, d.eps, s)
        ctx.linear(act, f"{p}.gate_up", f"{p}.gate_up", a["pre_gu"], L)
        act = q.geglu(a["pre_gu"], ctx.lin[f"{p}.down"], f"{p}.down", L, d.mlp, s)
        ctx.linear(act, f"{p}.down", f"{p}.down", a["pre_x"], L, c=a["pre_x"])


def decoder_step(ctx: StageContext, step: int) -> None:
    """One flow-matching Euler step of the action expert over the cached prefix."""
    k, d, a, s = ctx.k, ctx.d, ctx.a, ctx.stream
    H = d.horizon
    ctx.linear(a["x_bf16"], "act_in", "", a["dec_x"], H)
    if ctx.expert is not None:
        ctx.expert.run(ctx, step)
    else:
        expert_layers(ctx, step)
    ctx.linear(a["dec_xn"], "act_out", "", a["v"], H)
    k.euler_step(a["x"], a["v"], a["x_bf16"], H * d.action_dim, -1.0 / d.steps, s)


def expert_layers(ctx: StageContext, step: int) -> None:
    """The expert's layers as a kernel sequence: dec_x -> every layer -> final adaRMS into
    dec_xn (what the persistent kernel does in one launch)."""
    k, d, a, q, s = ctx.k, ctx.d, ctx.a, ctx.quant, ctx.stream
    H, W = d.horizon, d.ex_width
    kv_layer = 2 * d.cache_rows * d.kv_dim
    act = q.adarms(a["dec_x"], ctx.mod(step, 0), ctx.lin["ex.0.qkv"], f"ex.{step}.0.qkv", H, W,
                   d.ex_eps, s)
    for i in range(d.depth):
        p, lin = f"ex.{step}.{i}", f"ex.{i}"
        kc, vc = a["k_cache"] + i * kv_layer, a["v_cache"] + i * kv_layer
        ctx.linear(act, f"{lin}.qkv", f"{p}.qkv", a["dec_qkv"], H)
        k.rope_qkv_split(a["dec_qkv"], ctx.inp.dec_positions, a["dec_q"], kc, vc,
                         ctx.inp.valid_len, H, d.heads, d.kv_heads, d.head_dim, d.cache_rows,
                         d.theta, 1.0, s,
                         **a.rope_table(d))
        act = ctx.attend(DECODER, i, f"{lin}.o", f"{p}.o", a["dec_attn"], H * d.q_dim,
                         q=a["dec_q"], k_cache=kc, v_cache=vc, prefix_len=ctx.inp.valid_len,
                         key_mask=ctx.inp.key_mask)
        ctx.linear(act, f"{lin}.o", f"{p}.o", a["dec_y"], H)
        act = q.gated_adarms(a["dec_x"], a["dec_y"], ctx.mod(step, 2 * i),
                             ctx.mod(step, 2 * i + 1), ctx.lin[f"{lin}.gate_up"],
                             f"{p}.gate_up", H, W, d.ex_eps, s)
        ctx.linear(act, f"{lin}.gate_up", f"{p}.gate_up", a["dec_gu"], H)
        act = q.geglu(a["dec_gu"], ctx.lin[f"{lin}.down"], f"{p}.down", H, d.ex_mlp, s)
        ctx.linear(act, f"{lin}.down", f"{p}.down", a["dec_y"], H)
        if i + 1 < d.depth:  # gate the MLP branch in and normalise for the next layer at once
            act = q.gated_adarms(a["dec_x"], a["dec_y"], ctx.mod(step, 2 * i + 1),
                                 ctx.mod(step, 2 * i + 2), ctx.lin[f"ex.{i + 1}.qkv"],
                                 f"ex.{step}.{i + 1}.qkv", H, W, d.ex_eps, s)
    k.gated_residual(a["dec_x"], a["dec_y"], ctx.mod(step, 2 * d.depth - 1), H, W, H, s)
    k.adarms_bf16(a["dec_x"], ctx.mod(step, 2 * d.depth), a["dec_xn"], H, W, d.ex_eps, H, s)


def denoise(ctx: StageContext) -> None:
    """x (noise, staged by the frontend) -> normalised actions, in place."""
    d, a = ctx.d, ctx.a
    # dt = 0 with a zero velocity: x unchanged, and its bf16 copy for action_in is written
    ctx.k.euler_step(a["x"], a["v_zero"], a["x_bf16"], d.horizon * d.action_dim, 0.0, ctx.stream)
    for step in range(d.steps):
        decoder_step(ctx, step)


def infer(ctx: StageContext) -> None:
    """The whole policy: staged camera images, tokens and noise -> actions in ``x``."""
    siglip_forward(ctx)
    prefix_forward(ctx)
    denoise(ctx)


@dataclass(frozen=True)
class Tuning:
    """Per-hardware choices the shared sequence takes as data (no hardware branches)."""

    # FP8 GEMMs with K <= this use fast accumulation (no periodic fp32 promotion); 0 = none.
    fast_accum_max_k: int
    autotune: bool  # measure cuBLASLt candidates per shape at load
    autotune_candidates: int = 16  # heuristic candidates timed per shape


@dataclass(frozen=True)
class HardwarePipeline:
    """A ``pipeline_<hw>.py`` module's choices: its attention backend and its tuning (the
    stage functions and their calibration twin are the shared ones above)."""

    attention_backend: type
    tuning: Tuning
    expert: str = SEQUENCE  # SEQUENCE or MEGAKERNEL (see EXPERT_ENV)


def calibrating(ctx: StageContext) -> StageContext:
    """The same context with the calibration twin's quantiser (see CalibratingQuant); the
    expert runs as the kernel sequence there (it records every site's amax)."""
    return replace(ctx, quant=CalibratingQuant(ctx.k, ctx.scales, ctx.a), expert=None)
