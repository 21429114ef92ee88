"""The Pi0.5 decoder (pointer-only, CUDA-Graph safe), shared by its hardware files.

SigLIP, the prefix LM, the buffers, quantisers and the Euler step are the PaliGemma
stages every model shares (``models/common/paligemma_pipeline``); this module adds what is
Pi0.5's own: the action tokens (``action_in_proj`` of x_t, time is not mixed in) and the
action expert with adaRMS norms and gated residuals, whose per-step modulation was
precomputed into the ``ex.mod`` table by the weight spec (``adarms.py``). The expert's
layers run as the kernel sequence below, or as one persistent kernel per step
(``expert_megakernel.py``, Hopper) through ``StageContext.expert``.
"""
from __future__ import annotations

from functools import partial

from flash_rt.hardware.attention import DECODER
from flash_rt.models.common.expert_megakernel import ExpertMegakernel, megakernel_unsupported
from flash_rt.models.common.paligemma_pipeline import (
    ModelStages, PaliGemmaDims, StageContext, attention_spec, denoise,
    expert_step_sites, flow_step, prefix_forward, siglip_forward, vision_prefix_sites,
)
from flash_rt.models.pi05.adarms import mod_row


def scale_sites(d: PaliGemmaDims) -> list[str]:
    """FP8 activation scales in table order: SigLIP, projector, prefix LM, then the action
    expert per denoising step and layer."""
    return vision_prefix_sites(d) + expert_step_sites(d)


def embed_actions(ctx: StageContext, step: int) -> None:
    """x_t (bf16) -> action tokens in dec_x (the flow time enters through adaRMS)."""
    ctx.linear(ctx.a["x_bf16"], "act_in", "", ctx.a["dec_x"], ctx.d.horizon)


def expert_layers(ctx: StageContext, step: int) -> None:
    """The expert's layers as a kernel sequence: dec_x -> every layer -> final adaRMS into
    dec_xn (what the persistent kernel does in one launch)."""
    k, d, a, q, s = ctx.k, ctx.d, ctx.a, ctx.quant, ctx.stream
    H, W = d.horizon, d.ex_width
    kv_layer = 2 * d.cache_rows * d.kv_dim
    act = q.adarms(a["dec_x"], mod_row(ctx, step, 0), ctx.lin["ex.0.qkv"], f"ex.{step}.0.qkv",
                   H, W, d.ex_eps, s)
    for i in range(d.depth):
        p, lin = f"ex.{step}.{i}", f"ex.{i}"
        kc, vc = a["k_cache"] + i * kv_layer, a["v_cache"] + i * kv_layer
        ctx.linear(act, f"{lin}.qkv", f"{p}.qkv", a["dec_qkv"], H)
        k.rope_qkv_split(a["dec_qkv"], ctx.inp.action_positions, a["dec_q"], kc, vc,
                         ctx.inp.valid_len, H, d.heads, d.kv_heads, d.head_dim, d.cache_rows,
                         d.theta, 1.0, s,
                         **a.rope_table(d))
        act = ctx.attend(DECODER, i, f"{lin}.o", f"{p}.o", a["dec_attn"], H * d.q_dim,
                         q=a["dec_q"], k_cache=kc, v_cache=vc, prefix_len=ctx.inp.valid_len,
                         key_mask=ctx.inp.key_mask)
        ctx.linear(act, f"{lin}.o", f"{p}.o", a["dec_y"], H)
        act = q.gated_adarms(a["dec_x"], a["dec_y"], mod_row(ctx, step, 2 * i),
                             mod_row(ctx, step, 2 * i + 1), ctx.lin[f"{lin}.gate_up"],
                             f"{p}.gate_up", H, W, d.ex_eps, s)
        act = ctx.gate_up_geglu(act, f"{lin}.gate_up", f"{p}.gate_up", f"{lin}.down", f"{p}.down",
                                a["dec_gu"], H, d.ex_mlp)
        ctx.linear(act, f"{lin}.down", f"{p}.down", a["dec_y"], H)
        if i + 1 < d.depth:  # gate the MLP branch in and normalise for the next layer at once
            act = q.gated_adarms(a["dec_x"], a["dec_y"], mod_row(ctx, step, 2 * i + 1),
                                 mod_row(ctx, step, 2 * i + 2), ctx.lin[f"ex.{i + 1}.qkv"],
                                 f"ex.{step}.{i + 1}.qkv", H, W, d.ex_eps, s)
    k.gated_residual(a["dec_x"], a["dec_y"], mod_row(ctx, step, 2 * d.depth - 1), H, W, H, s)
    k.adarms_bf16(a["dec_x"], mod_row(ctx, step, 2 * d.depth), a["dec_xn"], H, W, d.ex_eps, H, s)


def decoder_step(ctx: StageContext, step: int) -> None:
    """One flow-matching Euler step of the action expert over the cached prefix."""
    flow_step(ctx, step, embed_actions, expert_layers)


def infer(ctx: StageContext) -> None:
    """The whole policy: staged camera images, tokens and noise -> actions in ``x``."""
    siglip_forward(ctx)
    prefix_forward(ctx)
    denoise(ctx, decoder_step)


def stages(ctx: StageContext) -> dict:
    """Stage name -> zero-argument launcher (for per-stage timing)."""
    return {"siglip": lambda: siglip_forward(ctx), "prefix": lambda: prefix_forward(ctx),
            "denoise_step": lambda: decoder_step(ctx, 0)}


def megakernel_inputs(ctx: StageContext, step: int) -> dict:
    """The persistent kernel's per-step pointers for Pi0.5: the step's adaRMS rows, keys
    through the prefix (the actions' K/V follow it), the actions' positions."""
    return {"mod": mod_row(ctx, step, 0), "keys_end": ctx.inp.valid_len,
            "positions": ctx.inp.action_positions}


PI05 = ModelStages(model="pi05", attention_spec=attention_spec, scale_sites=scale_sites,
                   infer=infer, stages=stages, megakernel_unsupported=megakernel_unsupported,
                   megakernel=partial(ExpertMegakernel, step_inputs=megakernel_inputs,
                                      fold_in=True))
