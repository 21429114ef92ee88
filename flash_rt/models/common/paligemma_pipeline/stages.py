"""The stages every PaliGemma flow policy shares (pointer-only, CUDA-Graph safe).

Each stage function reads raw device pointers from a :class:`StageContext` and launches
``flash_rt_kernels`` on ``ctx.stream``; nothing here allocates, synchronises or reads a
tensor value, so a model's whole inference can be captured into a CUDA Graph and replayed
with new inputs written into the same buffers. A model's own module
(``models/<model>/pipeline_common.py``) adds its action embedding and expert layers and
composes :func:`flow_step` / :func:`denoise` from them; the hardware files choose the
attention backend and GEMM tuning and never branch here.

A device int32 ``valid_len`` (prefix rows through the last valid text token) and a uint8
``key_mask`` (masked views, padding) make one graph serve every prompt length; the suffix's
own K/V go to cache rows ``[valid_len, valid_len + suffix_len)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from flash_rt.hardware.attention import DECODER, ENCODER, SIGLIP, AttentionSpec, SiteSpec
from flash_rt.models.common.paligemma_pipeline.context import StageContext
from flash_rt.models.common.paligemma_pipeline.dims import PaliGemmaDims

GEMMA_SITES = ("qkv", "o", "gate_up", "down")  # the quantised GEMM inputs of a Gemma layer


def attention_spec(d: PaliGemmaDims) -> AttentionSpec:
    """The attention sites of SigLIP, the prefix LM and the action tokens (the seed's
    make_pi05_attention_spec); a model may add its own (Pi0's state token)."""
    return AttentionSpec(sites=(
        SiteSpec(SIGLIP, d.sig_depth, d.sig_heads, d.sig_heads, d.sig_width // d.sig_heads,
                 d.tokens_per_view, d.tokens_per_view, batch=d.views),
        SiteSpec(ENCODER, d.depth, d.heads, d.kv_heads, d.head_dim, d.prefix_len, d.prefix_len),
        SiteSpec(DECODER, d.depth, d.heads, d.kv_heads, d.head_dim, d.horizon, d.cache_rows),
    ))


def gemma_sites(name: str, depth: int, kv_only_last: bool) -> list[str]:
    """Scale sites of a stack of Gemma layers (``name`` formats with the layer ``i``); with
    ``kv_only_last`` the last layer has only its QKV input (see GemmaRun)."""
    sites = []
    for i in range(depth):
        last = kv_only_last and i == depth - 1
        sites += [f"{name.format(i=i)}.{n}" for n in (GEMMA_SITES[:1] if last else GEMMA_SITES)]
    return sites


def vision_prefix_sites(d: PaliGemmaDims) -> list[str]:
    """Scale sites of SigLIP, the projector and the prefix LM, in table order."""
    sites = [f"sig.{i}.{n}" for i in range(d.sig_depth) for n in ("qkv", "o", "fc1", "fc2")]
    sites.append("proj")
    return sites + gemma_sites("lm.{i}", d.depth, kv_only_last=True)


def expert_step_sites(d: PaliGemmaDims) -> list[str]:
    """Scale sites of the action expert, per denoising step and layer (the activations
    change with the flow time, so each step has its own)."""
    return [f"ex.{k}.{i}.{n}" for k in range(d.steps) for i in range(d.depth)
            for n in GEMMA_SITES]


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


@dataclass(frozen=True)
class GemmaRun:
    """Gemma layers with plain RMSNorm (its ``(1 + w)`` folded into the next weights) and
    ungated residuals over one block of rows: the prefix LM over the prefix, Pi0's action
    expert over its state token or its action tokens."""

    rows: int
    width: int
    mlp: int
    eps: float
    buffers: str  # activation prefix: "pre" (pre_x, pre_qkv, ...) or "dec"
    positions: int  # int32 (rows,) RoPE positions
    cache_row: int  # int32 (1,) cache row of the first row's K/V; 0: row 0
    site: str  # attention site kind
    weights: str  # Linear names, formatted with the layer ``i``: "lm.{i}"
    scales: str  # scale-site names, formatted with ``i``
    kv_only_last: bool  # the last layer only writes K/V (its output feeds nothing)
    keys: dict = field(default_factory=dict)  # the site's key-range arguments


def gemma_layers(ctx: StageContext, run: GemmaRun) -> None:
    """Every layer of ``run``: RMSNorm -> QKV -> RoPE + K/V cache write -> attention ->
    O (+x) -> RMSNorm -> gate/up -> GeGLU -> down (+x), in place on ``<buffers>_x``."""
    k, d, a, q, s = ctx.k, ctx.d, ctx.a, ctx.quant, ctx.stream
    M, W = run.rows, run.width
    x, qkv, qbuf, attn, gu = (a[f"{run.buffers}_{n}"] for n in ("x", "qkv", "q", "attn", "gu"))
    kv_layer = 2 * d.cache_rows * d.kv_dim
    for i in range(d.depth):
        p, site = run.weights.format(i=i), run.scales.format(i=i)
        kc, vc = a["k_cache"] + i * kv_layer, a["v_cache"] + i * kv_layer
        act = q.rmsnorm(x, ctx.lin[f"{p}.qkv"], f"{site}.qkv", M, W, run.eps, s)
        ctx.linear(act, f"{p}.qkv", f"{site}.qkv", qkv, M)
        k.rope_qkv_split(qkv, run.positions, qbuf, kc, vc, run.cache_row, M, d.heads,
                         d.kv_heads, d.head_dim, d.cache_rows, d.theta, 1.0, s,
                         **a.rope_table(d))
        if run.kv_only_last and i == d.depth - 1:
            break  # the last layer only contributes its K/V
        act = ctx.attend(run.site, i, f"{p}.o", f"{site}.o", attn, M * d.q_dim,
                         q=qbuf, k_cache=kc, v_cache=vc, **run.keys)
        ctx.linear(act, f"{p}.o", f"{site}.o", x, M, c=x)
        act = q.rmsnorm(x, ctx.lin[f"{p}.gate_up"], f"{site}.gate_up", M, W, run.eps, s)
        act = ctx.gate_up_geglu(act, f"{p}.gate_up", f"{site}.gate_up", f"{p}.down",
                                f"{site}.down", gu, M, run.mlp)
        ctx.linear(act, f"{p}.down", f"{site}.down", x, M, c=x)


def prefix_forward(ctx: StageContext) -> None:
    """Text embedding + the Gemma prefix; leaves every layer's post-RoPE K/V in the cache."""
    d, a, inp = ctx.d, ctx.a, ctx.inp
    ctx.k.embed_gather(inp.tokens, ctx.w["lm.embed"], a["pre_x"] + 2 * d.image_rows * d.width,
                       d.text_len, d.width, d.vocab, float(d.width) ** 0.5, ctx.stream)
    gemma_layers(ctx, GemmaRun(
        rows=d.prefix_len, width=d.width, mlp=d.mlp, eps=d.eps, buffers="pre",
        positions=inp.positions, cache_row=0, site=ENCODER, weights="lm.{i}", scales="lm.{i}",
        kv_only_last=True, keys={"valid_len": inp.valid_len, "key_mask": inp.key_mask}))


StepFn = Callable[[StageContext, int], None]


def flow_step(ctx: StageContext, step: int, embed_actions: StepFn, expert_layers: StepFn) -> None:
    """One flow-matching Euler step over the cached prefix: the model's action embedding
    (x_bf16 -> dec_x), its expert layers (dec_x -> dec_xn; the persistent kernel when the
    context has one), the action-out projection and the Euler update of ``x``."""
    k, d, a, s = ctx.k, ctx.d, ctx.a, ctx.stream
    H = d.horizon
    mk = ctx.expert
    if mk is None or not mk.folds_in:
        embed_actions(ctx, step)
    if mk is not None:
        mk.run(ctx, step)
    else:
        expert_layers(ctx, step)
    if mk is None or not mk.folds_out:  # else the kernel did both (folded action I/O)
        ctx.linear(a["dec_xn"], "act_out", "", a["v"], H)
        k.euler_step(a["x"], a["v"], a["x_bf16"], H * d.action_dim, -1.0 / d.steps, s)


def denoise(ctx: StageContext, decoder_step: StepFn) -> None:
    """x (noise, staged by the frontend) -> normalised actions, in place."""
    d, a = ctx.d, ctx.a
    # dt = 0 with a zero velocity: x unchanged, and its bf16 copy for action_in is written
    ctx.k.euler_step(a["x"], a["v_zero"], a["x_bf16"], d.horizon * d.action_dim, 0.0, ctx.stream)
    for step in range(d.steps):
        decoder_step(ctx, step)
