"""CPU emulation of the flash_rt_kernels bindings the Pi0 / Pi0.5 pipelines call.

Each binding is re-implemented in torch straight from its contract in docs/kernels.md
(pointers are turned back into tensors over the same memory), so the *real* pipeline code
(weight spec, staging, stage functions, calibration twin) runs on a CPU-only CI machine and
is compared with the FP32 reference. It checks the dataflow and the contracts the
pipeline relies on; the kernels themselves are tested on the GPU (test/kernels).
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
import torch
import torch.nn.functional as F

from flash_rt.models.common.functional import MASK_VALUE, apply_rope, rope_angles, rotate_half
from flash_rt.core.weight_spec import split_interleaved
from flash_rt.models.common.expert_schedule import TRACE_STAMPS
from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP
from flash_rt.processing.image import resize_with_pad, resized_shape, to_model_range

FP8, BF16, F32, I32, U8 = (torch.float8_e4m3fn, torch.bfloat16, torch.float32, torch.int32,
                           torch.uint8)
E4M3_MAX = 448.0


def view(ptr: int, shape, dtype) -> torch.Tensor:
    """A tensor aliasing ``prod(shape)`` elements at address ``ptr``."""
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return torch.frombuffer((ctypes.c_byte * n).from_address(ptr), dtype=dtype).view(shape)


def scalar(ptr: int, dtype=F32):
    return view(ptr, (1,), dtype)[0].item()


def q8(x: torch.Tensor, s: float) -> torch.Tensor:
    return (x.float() / torch.tensor(s)).clamp(-E4M3_MAX, E4M3_MAX).to(FP8)


def gelu(x):
    return F.gelu(x, approximate="tanh")


def geglu_of(gu: torch.Tensor) -> torch.Tensor:
    """gelu(gate) * up of fp32 gate/up columns in the weight spec's interleave."""
    gate, up = split_interleaved(gu, 2, GATE_UP_GROUP, dim=-1)
    return gelu(gate) * up


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def aligned(where: str, **ptrs: int) -> None:
    """The bindings' 16-byte alignment check of vector / cuBLASLt operands."""
    for name, p in ptrs.items():
        if p % 16:
            raise ValueError(f"{where}: {name} must be 16-byte aligned")


def multiple_of_8(where: str, n: int) -> None:
    if n <= 0 or n % 8:
        raise ValueError(f"{where}: n must be a positive multiple of 8, got {n}")


class Epilogue:
    NONE, BIAS, GELU, BIAS_GELU = "none", "bias", "gelu", "bias_gelu"


class EmulatedKernels:
    Epilogue = Epilogue
    E4M3_MAX = E4M3_MAX

    def __init__(self):
        self.calls: dict[str, int] = {}
        self.autotune_cycles: list[list[int]] = []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if callable(attr) and not name.startswith("_") and name != "Epilogue":
            calls = object.__getattribute__(self, "calls")
            calls[name] = calls.get(name, 0) + 1
        return attr

    def built_archs(self):
        return ["emulated"]

    def attention_workspace_bytes(self, batch, Lq, H, D, splits):
        return 0

    # -- GEMM: D = sa*sb*(A B^T) [+bias] [GELU] [+C] ----------------------------------------
    def _gemm(self, A, B, d, M, N, bias, c, epilogue):
        with_bias = epilogue in (Epilogue.BIAS, Epilogue.BIAS_GELU)
        if bool(bias) != with_bias:  # the bindings' own check
            raise ValueError(f"bias={bias:#x} does not match epilogue {epilogue}")
        aligned("gemm", d=d, c=c, bias=bias)
        out = A @ B.T
        if with_bias:
            out = out + view(bias, (N,), BF16).float()
        if epilogue in (Epilogue.GELU, Epilogue.BIAS_GELU):
            out = gelu(out)
        if c:
            out = out + view(c, (M, N), BF16).float()
        view(d, (M, N), BF16).copy_(out.to(BF16))

    def gemm_fp8(self, a, b, d, M, N, K, a_scale, b_scale, stream, *, bias=0, c=0,
                 epilogue=Epilogue.NONE, **_):
        # cuBLASLt rejects every algorithm with misaligned scales
        aligned("gemm_fp8", a=a, b=b, a_scale=a_scale, b_scale=b_scale)
        A = view(a, (M, K), FP8).float() * scalar(a_scale)
        B = view(b, (N, K), FP8).float() * scalar(b_scale)
        self._gemm(A, B, d, M, N, bias, c, epilogue)

    def gemm_fp8_geglu(self, a, w, out, M, F_, K, a_scale, w_scale, out_scale, workspace,
                       workspace_bytes, stream, config=0):
        """The fused gate/up + GeGLU GEMM: g and u stay fp32 (no bf16 round trip). The real
        kernel streams ``a`` while it writes ``out``: overlapping buffers are refused."""
        aligned("gemm_fp8_geglu", a=a, w=w, out=out)
        if not 0 <= config < 4:  # the binding's configs (the values are config-independent)
            raise ValueError(f"gemm_fp8_geglu: config must be 0 .. 3, got {config}")
        if a < out + M * F_ and out < a + M * K:
            raise ValueError("gemm_fp8_geglu: out overlaps a")
        A = view(a, (M, K), FP8).float() * scalar(a_scale)
        W = view(w, (2 * F_, K), FP8).float() * scalar(w_scale)
        view(out, (M, F_), FP8).copy_(q8(geglu_of(A @ W.T), scalar(out_scale)))

    def gemm_bf16(self, a, b, d, M, N, K, stream, *, bias=0, c=0, epilogue=Epilogue.NONE, **_):
        aligned("gemm_bf16", a=a, b=b)
        self._gemm(view(a, (M, K), BF16).float(), view(b, (N, K), BF16).float(), d, M, N, bias,
                   c, epilogue)

    def gemm_fp8_autotune(self, *args, b_cycle=(), **kw):
        kw.pop("iters", None), kw.pop("max_candidates", None)
        self.autotune_cycles.append(list(b_cycle))
        self.gemm_fp8(*args, **kw)

    def gemm_bf16_autotune(self, *args, b_cycle=(), **kw):
        kw.pop("iters", None), kw.pop("max_candidates", None)
        self.autotune_cycles.append(list(b_cycle))
        self.gemm_bf16(*args, **kw)

    # -- norms ------------------------------------------------------------------------------
    def layernorm_bf16(self, x, w, b, out, M, N, eps, stream):
        y = F.layer_norm(view(x, (M, N), BF16).float(), (N,), view(w, (N,), BF16).float(),
                         view(b, (N,), BF16).float(), eps)
        view(out, (M, N), BF16).copy_(y.to(BF16))

    def layernorm_fp8(self, x, w, b, out, out_scale, M, N, eps, stream):
        y = F.layer_norm(view(x, (M, N), BF16).float(), (N,), view(w, (N,), BF16).float(),
                         view(b, (N,), BF16).float(), eps)
        view(out, (M, N), FP8).copy_(q8(y, scalar(out_scale)))

    def _rms_gain(self, w, N, add_one):
        if not w:
            return 1.0
        g = view(w, (N,), BF16).float()
        return 1.0 + g if add_one else g

    def rmsnorm_bf16(self, x, w, out, M, N, eps, add_one, stream):
        y = rms(view(x, (M, N), BF16), eps) * self._rms_gain(w, N, add_one)
        view(out, (M, N), BF16).copy_(y.to(BF16))

    def rmsnorm_fp8(self, x, w, out, out_scale, M, N, eps, add_one, stream):
        y = rms(view(x, (M, N), BF16), eps) * self._rms_gain(w, N, add_one)
        view(out, (M, N), FP8).copy_(q8(y, scalar(out_scale)))

    def _mod(self, mod, M, N, rows_per_cond):
        conds = -(-M // rows_per_cond)
        table = view(mod, (conds, 3 * N), F32)
        return table.repeat_interleave(rows_per_cond, dim=0)[:M]

    def _adarms(self, x, mod, M, N, eps, rpc):
        m = self._mod(mod, M, N, rpc)
        return rms(view(x, (M, N), BF16), eps) * (1.0 + m[:, :N]) + m[:, N:2 * N]

    def adarms_bf16(self, x, mod, out, M, N, eps, rows_per_cond, stream):
        view(out, (M, N), BF16).copy_(self._adarms(x, mod, M, N, eps, rows_per_cond).to(BF16))

    def adarms_fp8(self, x, mod, out, out_scale, M, N, eps, rows_per_cond, stream):
        view(out, (M, N), FP8).copy_(q8(self._adarms(x, mod, M, N, eps, rows_per_cond),
                                        scalar(out_scale)))

    def gated_residual(self, x, y, mod, M, N, rows_per_cond, stream):
        gate = self._mod(mod, M, N, rows_per_cond)[:, 2 * N:]
        xt = view(x, (M, N), BF16)
        xt.copy_((xt.float() + gate * view(y, (M, N), BF16).float()).to(BF16))

    def gated_residual_adarms_fp8(self, x, y, gate_mod, norm_mod, out, out_scale, M, N, eps,
                                  rows_per_cond, stream):
        self.gated_residual(x, y, gate_mod, M, N, rows_per_cond, stream)
        self.adarms_fp8(x, norm_mod, out, out_scale, M, N, eps, rows_per_cond, stream)

    # -- elementwise ------------------------------------------------------------------------
    def _geglu(self, gu, M, F_):
        """gelu(gate) * up from a (M, 2F) GEMM output in the weight spec's interleave."""
        return geglu_of(view(gu, (M, 2 * F_), BF16).float())

    def geglu_bf16(self, gu, out, M, F_, stream):
        view(out, (M, F_), BF16).copy_(self._geglu(gu, M, F_).to(BF16))

    def geglu_fp8(self, gu, out, out_scale, M, F_, stream):
        view(out, (M, F_), FP8).copy_(q8(self._geglu(gu, M, F_), scalar(out_scale)))

    def silu_bf16(self, x, out, n, stream):
        multiple_of_8("silu_bf16", n)
        aligned("silu_bf16", x=x, out=out)
        view(out, (n,), BF16).copy_(F.silu(view(x, (n,), BF16).float()).to(BF16))

    def quantize_fp8_static(self, x, out, scale, n, stream):
        view(out, (n,), FP8).copy_(q8(view(x, (n,), BF16), scalar(scale)))

    def quantize_fp8_dynamic(self, x, out, scale_out, amax_ws, n, stream):
        xs = view(x, (n,), BF16).float()
        s = max(float(xs.abs().max()), 1e-12) / E4M3_MAX
        view(scale_out, (1,), F32)[0] = s
        view(out, (n,), FP8).copy_(q8(xs, view(scale_out, (1,), F32)[0].item()))

    def amax_update(self, x, n, amax, stream):
        a = view(amax, (1,), F32)
        a[0] = max(float(a[0]), float(view(x, (n,), BF16).float().abs().max()))

    def euler_step(self, x, v, x_bf16, n, dt, stream):
        xt = view(x, (n,), F32)
        xt.copy_(xt + dt * view(v, (n,), BF16).float())
        if x_bf16:
            view(x_bf16, (n,), BF16).copy_(xt.to(BF16))

    # -- rope / embed / images --------------------------------------------------------------
    def rope_table(self, table, rows, D, theta, stream):
        ang = rope_angles(torch.arange(rows), D, theta)
        view(table, (rows, D // 2, 2), F32).copy_(torch.stack([ang.cos(), ang.sin()], -1))

    def rope_qkv_split(self, qkv, positions, q_out, k_cache, v_cache, cache_offset, M, H, Hkv,
                       D, cache_rows, theta, q_scale, stream, *, table=0, table_rows=0):
        t = view(qkv, (M, (H + 2 * Hkv) * D), BF16).float()
        pos = view(positions, (M,), I32).long()
        if table:  # cos/sin from the table (positions inside it), as the kernel reads them
            assert int(pos.max()) < table_rows, "the pipeline's table misses a position"
            cs = view(table, (table_rows, D // 2, 2), F32)[pos][:, None]  # (M, 1, D/2, 2)
            q = rotate_half(t[:, :H * D].reshape(M, H, D), cs[..., 0], cs[..., 1])[None]
            k = rotate_half(t[:, H * D:(H + Hkv) * D].reshape(M, Hkv, D), cs[..., 0],
                            cs[..., 1])[None]
        else:
            q = apply_rope(t[:, :H * D].reshape(1, M, H, D), pos[None], theta)
            k = apply_rope(t[:, H * D:(H + Hkv) * D].reshape(1, M, Hkv, D), pos[None], theta)
        view(q_out, (M, H * D), BF16).copy_((q.reshape(M, H * D) * q_scale).to(BF16))
        off = int(scalar(cache_offset, I32)) if cache_offset else 0
        kc = view(k_cache, (cache_rows, Hkv * D), BF16)
        vc = view(v_cache, (cache_rows, Hkv * D), BF16)
        for m in range(M):
            r = off + m
            if 0 <= r < cache_rows:
                kc[r] = k[0, m].reshape(-1).to(BF16)
                vc[r] = t[m, (H + Hkv) * D:].to(BF16)

    def embed_gather(self, ids, table, out, M, N, vocab, scale, stream):
        idx = view(ids, (M,), I32).long()
        tab = view(table, (vocab, N), BF16).float()
        ok = (idx >= 0) & (idx < vocab)
        rows = torch.where(ok[:, None], tab[idx.clamp(0, vocab - 1)] * scale, torch.zeros(()))
        view(out, (M, N), BF16).copy_(rows.to(BF16))

    def image_patches(self, src, out, H, W, S, P, out_row_stride, stream):
        img = view(src, (H, W, 3), U8).numpy().copy()
        x = to_model_range(torch.from_numpy(resize_with_pad(img, S))).permute(2, 0, 1)
        g = S // P
        rows = x.reshape(3, g, P, g, P).permute(1, 3, 0, 2, 4).reshape(g * g, 3 * P * P)
        o = view(out, (g * g, out_row_stride), BF16)
        o.zero_()
        o[:, :3 * P * P] = rows.to(BF16)
        return resized_shape(H, W, S)

    # -- attention ----------------------------------------------------------------------------
    @staticmethod
    def _attend(q, k, v, scale, key_ok):
        """q (Lq, H, D), k/v (Lk, Hkv, D), key_ok (Lk,) bool -> (Lq, H*D)."""
        Lq, H, D = q.shape
        g = H // k.shape[1]
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        logits = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
        logits = logits.masked_fill(~key_ok[None, None, :], MASK_VALUE)
        return torch.einsum("hqk,khd->qhd", logits.softmax(-1), v.float()).reshape(Lq, H * D)

    @staticmethod
    def _write_out(out, shape, value, out_scale, splits=1):
        """bf16 output, or FP8 quantised with the device scale (the kernels' out_scale, which
        they accept only with split-K)."""
        if out_scale and splits < 2:
            raise ValueError("attention: out_scale (FP8 output) needs splits >= 2")
        if out_scale:
            view(out, shape, FP8).copy_(q8(value.float(), scalar(out_scale)))
        else:
            view(out, shape, BF16).copy_(value.to(BF16))

    def attention_siglip(self, qkv, out, views, tokens, heads, head_dim, stream):
        W = heads * head_dim
        t = view(qkv, (views, tokens, 3, heads, head_dim), BF16)
        ok = torch.ones(tokens, dtype=torch.bool)
        o = torch.stack([self._attend(t[b, :, 0], t[b, :, 1], t[b, :, 2], head_dim ** -0.5, ok)
                         for b in range(views)])
        self._write_out(out, (views, tokens, W), o, 0)

    def _cached(self, q, k_cache, v_cache, out, n_q, rows, heads, kv_heads, head_dim, n_keys,
                scale, key_mask, out_scale, splits):
        ok = torch.arange(rows) < n_keys
        if key_mask:
            ok &= view(key_mask, (rows,), U8) != 0
        qt = view(q, (n_q, heads, head_dim), BF16)
        k = view(k_cache, (rows, kv_heads, head_dim), BF16)
        v = view(v_cache, (rows, kv_heads, head_dim), BF16)
        self._write_out(out, (n_q, heads * head_dim), self._attend(qt, k, v, scale, ok), out_scale,
                        splits)

    def attention_prefix(self, q, k_cache, v_cache, out, L, heads, kv_heads, head_dim,
                         valid_len, scale, stream, *, key_mask=0, out_scale=0, splits=1, **_):
        n = int(scalar(valid_len, I32))
        self._cached(q, k_cache, v_cache, out, L, L, heads, kv_heads, head_dim, n, scale,
                     key_mask, out_scale, splits)

    def attention_decoder(self, q, k_cache, v_cache, out, n_q, cache_rows, heads, kv_heads,
                          head_dim, prefix_len, scale, stream, *, key_mask=0, out_scale=0,
                          splits=1, **_):
        n = int(scalar(prefix_len, I32)) + n_q
        self._cached(q, k_cache, v_cache, out, n_q, cache_rows, heads, kv_heads, head_dim, n,
                     scale, key_mask, out_scale, splits)


    def attention_mqa_gemm_workspace_bytes(self, rows, keys_pad):
        return rows * keys_pad * 6 + 256

    def attention_mqa_gemm(self, q, k_cache, v_cache, out, n_q, cache_rows, keys_pad, heads,
                           head_dim, n_keys, scale, stream, *, keys_add=0, key_mask=0, **_):
        # the rows up to keys_pad must exist (finite) in the caller's caches
        pad = view(k_cache, (keys_pad, head_dim), BF16)[cache_rows:]
        assert bool(torch.isfinite(pad.float()).all())
        n = min(int(scalar(n_keys, I32)) + keys_add, cache_rows)
        self._cached(q, k_cache, v_cache, out, n_q, cache_rows, heads, 1, head_dim, n, scale,
                     key_mask, 0, 1)

    # -- the persistent action-expert kernel (interprets its task tables) ---------------------
    def expert_megakernel(self, ptrs, sizes, eps, attn_scale, theta, stream):
        from .emulated_expert import run
        run(ptrs, sizes, eps, attn_scale, seed=self.calls.get("expert_megakernel", 0),
            block_flags=self.block_flags)
        if "trace" in ptrs:  # emulated tasks take no time: a flat profile
            view(ptrs["trace"], (int(view(ptrs["task_start"], (sizes["blocks"] + 1,), I32)[-1]),
                                 TRACE_STAMPS),
                 torch.int64).zero_()

    def expert_megakernel_smem_bytes(self):
        return 0

    def set_programmatic_launch(self, on):
        before, self.programmatic_launch = getattr(self, "programmatic_launch", False), bool(on)
        return before  # (launch timing only: nothing to emulate)

    # the emulated build's dependency words: counters (the default), or with
    # FLASH_RT_MK_BLOCK_FLAGS one a counter and block (set the attribute to emulate it)
    block_flags = False

    def expert_megakernel_sync_words(self, counters, blocks):
        return counters * blocks + 2 if self.block_flags else counters + 1

    def expert_megakernel_folds_io(self):
        return True  # the emulation implements the folded action I/O (FLASH_RT_MK_FOLD_IO)

_ = np
