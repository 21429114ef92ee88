"""The Pi0 decoder (pointer-only, CUDA-Graph safe), shared by its hardware files.

SigLIP, the prefix LM, the buffers, quantisers and the Euler step are the PaliGemma stages
every model shares (``models/common/paligemma_pipeline``). Pi0 differs from Pi0.5 in its
suffix only (openpi ``src/openpi/models/pi0.py``, ``Pi0.embed_suffix`` / ``sample_actions``
with ``pi05=False``; LeRobot ``src/lerobot/policies/pi0/modeling_pi0.py``, ``PI0Pytorch``):

- one state token, ``state_proj(state)``, leads the suffix with ar = 1: it sees the valid
  prefix and itself; the actions (ar = 1 on the first) see the prefix, the state and each
  other;
- the flow time enters the action tokens: ``action_time_mlp_out(swish(action_time_mlp_in(
  concat[action_in_proj(x_t), time_emb(t)])))``;
- the expert's norms are Gemma ``(1 + w)`` RMSNorm and its residuals ungated, so its layers
  are the prefix LM's layer sequence (``GemmaRun``) with the expert's weights.

How the suffix mask maps onto the existing decoder attention (no kernel change):

1. The state token attends to nothing that changes while denoising (the prefix and
   itself), so its hidden state and K/V are the same at every step; openpi recomputes them
   each step, with the same result. :func:`state_forward` runs it once per inference, as a
   one-row GemmaRun whose attention is the decoder kernel with one query over keys
   ``< valid_len + 1`` (the ``STATE`` site), K/V written to cache row ``valid_len``, or as
   the persistent kernel's one-row pass (:class:`Pi0Megakernel`). Its last layer only
   writes K/V: the state's output is never projected.
2. The actions' K/V go to rows ``valid_len + 1 ...`` and they attend to keys
   ``< (valid_len + 1) + horizon``: Pi0.5's decoder call with the state row counted as
   prefix (``prefix_len`` = the staged ``actions_start``).

The time mixing is linear up to the swish: ``W_in [a; t] + b`` with ``a = W_a x + b_a``, so
the weight spec folds ``W_in[:, :w] W_a`` (width x action_dim) and a per-step bias
``W_in[:, :w] b_a + W_in[:, w:] emb(t_k) + b`` (steps x width): one bf16 GEMM with this
step's bias row, SiLU, ``action_time_mlp_out``.

The expert's layers run as the kernel sequence, or as the persistent kernel
(``models/common/expert_megakernel.py``, through ``StageContext.expert``): Pi0's step is
Pi0.5's task schedule with a constant zero adaRMS table (scale 0, shift 0: plain RMSNorm,
its weights folded into the next Linears as here), plain residuals rounded once (as this
sequence's GEMM epilogues with C = x), keys through ``actions_start`` (the state row counts
as prefix) and the actions' positions; the state token's pass is the same kernel over one
row with its own scale sites (``st.*``), its last layer stopping after QKV.
"""
from __future__ import annotations

import os
from dataclasses import replace

from flash_rt.hardware.attention import DECODER, STATE, AttentionSpec, SiteSpec
from flash_rt.models.common.expert_megakernel import ExpertMegakernel, megakernel_unsupported
from flash_rt.models.common.paligemma_pipeline import (
    MEGAKERNEL, SEQUENCE, GemmaRun, ModelStages, PaliGemmaDims, StageContext,
    attention_spec as _sites, denoise, expert_step_sites, flow_step, gemma_layers, gemma_sites,
    prefix_forward, siglip_forward, vision_prefix_sites,
)

# FLASH_RT_PI0_STATE_PASS=sequence keeps the state token's pass on the kernel sequence while
# the steps run on the persistent kernel (an A/B knob; see Pi0Megakernel)
STATE_PASS_ENV = "FLASH_RT_PI0_STATE_PASS"
STATE_SCALES = "st.{i}"  # scale sites of the state token's pass, per layer
ACT_TIME_IN, ACT_TIME_BIAS = "act_time_in", "act_time.bias"  # weight-spec names (_pi0_spec)
BF16_BYTES = 2


def attention_spec(d: PaliGemmaDims) -> AttentionSpec:
    """The shared sites (SigLIP, encoder, the actions' decoder) and the state token's."""
    state = SiteSpec(STATE, d.depth, d.heads, d.kv_heads, d.head_dim, d.state_tokens,
                     d.cache_rows)
    return AttentionSpec(sites=_sites(d).sites + (state,))


def scale_sites(d: PaliGemmaDims) -> list[str]:
    """FP8 activation scales in table order: SigLIP, projector, prefix LM, the action
    expert per denoising step and layer, then the state token's pass per layer."""
    return (vision_prefix_sites(d) + expert_step_sites(d) +
            gemma_sites(STATE_SCALES, d.depth, kv_only_last=True))


def _expert_run(ctx: StageContext, **rows) -> GemmaRun:
    d = ctx.d
    return GemmaRun(width=d.ex_width, mlp=d.ex_mlp, eps=d.ex_eps, buffers="dec",
                    weights="ex.{i}", **rows)


def state_forward(ctx: StageContext) -> None:
    """The state token through the expert's layers, once per inference: its K/V land in
    cache row ``valid_len`` of every layer (see the module docstring). With the persistent
    kernel (:class:`Pi0Megakernel`) as one launch of its one-row pass, else as the kernel
    sequence (also the calibration twin's path: it records the pass's scales)."""
    d, a, inp = ctx.d, ctx.a, ctx.inp
    ctx.linear(inp.state, "state_in", "", a["dec_x"], d.state_tokens)
    if ctx.expert is not None and ctx.expert.state_pass is not None:
        ctx.expert.state_pass.run(ctx, 0)
        return
    gemma_layers(ctx, _expert_run(
        ctx, rows=d.state_tokens, positions=inp.state_position, cache_row=inp.valid_len,
        site=STATE, scales=STATE_SCALES, kv_only_last=True,
        keys={"prefix_len": inp.valid_len, "key_mask": inp.key_mask}))


def embed_actions(ctx: StageContext, step: int) -> None:
    """x_t (bf16) and this step's time -> action tokens in dec_x: the folded action-time
    GEMM with step ``step``'s bias row, SiLU, action_time_mlp_out."""
    d, a = ctx.d, ctx.a
    H, W = d.horizon, d.ex_width
    lin = replace(ctx.lin[ACT_TIME_IN], b=ctx.w[ACT_TIME_BIAS] + BF16_BYTES * step * W)
    ctx.linear(a["x_bf16"], ACT_TIME_IN, "", a["dec_y"], H, lin=lin)
    ctx.k.silu_bf16(a["dec_y"], a["dec_y"], H * W, ctx.stream)
    ctx.linear(a["dec_y"], "act_time_out", "", a["dec_x"], H)


def expert_layers(ctx: StageContext, step: int) -> None:
    """The expert's layers over the action tokens as a kernel sequence: dec_x -> every
    layer -> the final RMSNorm into dec_xn (its weight is folded into action_out)."""
    d, a, inp = ctx.d, ctx.a, ctx.inp
    gemma_layers(ctx, _expert_run(
        ctx, rows=d.horizon, positions=inp.action_positions, cache_row=inp.actions_start,
        site=DECODER, scales=f"ex.{step}.{{i}}", kv_only_last=False,
        keys={"prefix_len": inp.actions_start, "key_mask": inp.key_mask}))
    ctx.k.rmsnorm_bf16(a["dec_x"], 0, a["dec_xn"], d.horizon, d.ex_width, d.ex_eps, False,
                       ctx.stream)


def decoder_step(ctx: StageContext, step: int) -> None:
    """One flow-matching Euler step of the action expert over the cached prefix + state."""
    flow_step(ctx, step, embed_actions, expert_layers)


def infer(ctx: StageContext) -> None:
    """The whole policy: staged camera images, tokens, state and noise -> actions in ``x``."""
    siglip_forward(ctx)
    prefix_forward(ctx)
    state_forward(ctx)
    denoise(ctx, decoder_step)


def stages(ctx: StageContext) -> dict:
    """Stage name -> zero-argument launcher (for per-stage timing)."""
    return {"siglip": lambda: siglip_forward(ctx), "prefix": lambda: prefix_forward(ctx),
            "state": lambda: state_forward(ctx), "denoise_step": lambda: decoder_step(ctx, 0)}


def megakernel_inputs(ctx: StageContext, step: int) -> dict:
    """The persistent kernel's per-step pointers for Pi0: keys through the state row
    (``actions_start``), the actions' positions; no adaRMS rows (the zero table)."""
    return {"keys_end": ctx.inp.actions_start, "positions": ctx.inp.action_positions}


def state_megakernel_inputs(ctx: StageContext, step: int) -> dict:
    """The state pass's pointers: keys through its own row (``valid_len``, where its K/V
    go), its RoPE position."""
    return {"keys_end": ctx.inp.valid_len, "positions": ctx.inp.state_position}


class Pi0Megakernel(ExpertMegakernel):
    """Pi0's expert on the persistent kernel: the denoising steps (this object, as Pi0.5's)
    and ``state_pass``, the state token's once-per-inference pass as a second schedule of
    one row over the same packed weights, its last layer stopping after QKV. On the H100
    (docs/performance.md run 12, 2 views h50): 0.516 ms a chunk against 0.726 for the
    state pass as 18 layers of one-row launches."""

    def __init__(self, d: PaliGemmaDims, weights: dict, acts, device, blocks=None,
                 kernels=None):
        super().__init__(d, weights, acts, device, blocks, step_inputs=megakernel_inputs,
                         plain_residual=True, kernels=kernels)
        self.state_pass = None
        choice = os.environ.get(STATE_PASS_ENV, MEGAKERNEL)
        if choice not in (MEGAKERNEL, SEQUENCE):
            raise ValueError(f"{STATE_PASS_ENV}={choice!r}: expected {MEGAKERNEL!r} or "
                             f"{SEQUENCE!r}")
        if choice == MEGAKERNEL:
            self.state_pass = ExpertMegakernel(
                d, weights, acts, device, blocks, step_inputs=state_megakernel_inputs,
                plain_residual=True, rows=d.state_tokens, kv_only_last=True,
                scale_site=STATE_SCALES.format(i=0) + ".qkv", packed=self)


PI0 = ModelStages(model="pi0", attention_spec=attention_spec, scale_sites=scale_sites,
                  infer=infer, stages=stages, megakernel_unsupported=megakernel_unsupported,
                  megakernel=Pi0Megakernel)
