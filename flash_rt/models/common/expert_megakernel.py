"""Device state of the persistent action-expert kernel for one engine.

Built once at load (from the converted weights and the engine's buffers): the schedule's
tables, the expert's FP8 weights re-packed into the blocks' reading order (the original
Linears stay: the calibration twin and the sequence fallback use them), the per-layer
weight scales, and the kernel's scratch (FP8 GEMM inputs, O's / down's split-K partials,
attention partials, counters). :meth:`run` is graph-safe: it only launches.

Shared by the models whose expert is a Gemma decoder over the cached prefix: what differs
per model is given at construction. ``step_inputs(ctx, step)`` returns the step's device
pointers that the kernel reads besides its fixed buffers: ``keys_end`` (int32: cache row of
the first action token, the keys before it being the cached prefix), ``positions`` (the
action tokens' RoPE positions) and ``mod`` (the step's adaRMS rows, Pi0.5), or no ``mod`` for
an expert with plain RMSNorm whose weights are folded into the next Linears (Pi0): its rows
are then a constant zero table (scale 0, shift 0). ``plain_residual``: residual branches are
added ungated and rounded once, as a GEMM epilogue with C = x does (Pi0's sequence),
instead of x + gate * bf16(branch) (Pi0.5's gated_residual_adarms).

Folded action I/O (a kernel module built with ``FLASH_RT_MK_FOLD_IO=1``, the default since
run 16, given as ``kernels``; ``FLASH_RT_MK_FOLD_IO=0`` in the environment turns it off for
an A/B on one build): the
kernel also runs the step's action-out projection and Euler update (``folds_out``) and, for
a model whose action embedding is one Linear of ``x_bf16`` (``fold_in``: Pi0.5, not Pi0's
time MLP), the action-in projection, so ``flow_step`` launches neither.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch

from flash_rt.core.task_schedule import TASK_FIELDS
from flash_rt.models.common.expert_schedule import (MAX_SPLIT_K, TOKEN_PAD, TRACE_STAMPS,
                                                    WEIGHT_SITES, ExpertDims, build_schedule,
                                                    kernel_sizes, pack_plan, pack_tile_major,
                                                    unsupported_reason)

StepInputs = Callable[[Any, int], dict]

# FLASH_RT_MK_FOLD_IO=0 keeps the action projections out of a build that can fold them.
FOLD_IO_ENV = "FLASH_RT_MK_FOLD_IO"
FOLD_IN_WEIGHTS, FOLD_OUT_WEIGHTS = ("act_in.w", "act_in.b"), ("act_out.w", "act_out.b")

# Blocks of the schedule when the kernels are emulated on the CPU (tests): few enough that
# every block runs many tasks and its weight ring wraps.
EMULATED_BLOCKS = 16


# K per O / down task in multiples of the default (ExpertDims.splitk_scale); the env var
# overrides the choice below (an A/B knob).
SPLITK_SCALE_ENV = "FLASH_RT_MK_SPLITK_SCALE"
# Padded horizons (tpad) from which O / down take twice the K per task: measured on the H100
# (run 10, docs/performance.md) 790 vs 809 us a step at 2 views h50 (tpad 64), and 584 vs
# 576 at 1 view h10 (tpad 16, kept at 1); tpad 32 / 48 are unmeasured and keep 1.
SPLITK_SCALE_2_FROM_TPAD = 64
# FLASH_RT_MK_GROUPED_DEPS=1: finer dependencies between combine and O, gate/up and down
# (ExpertDims.grouped_deps; a schedule choice, no rebuild). Off: no faster on the H100
# (run 15: 607-613 vs 605-612 us a step at 2 views h50, 505 vs 504 at 1 view h10).
GROUPED_DEPS_ENV = "FLASH_RT_MK_GROUPED_DEPS"
# Programmatic dependent launch (default on; FLASH_RT_MK_PDL=0 for plain launches): a
# step's blocks load their tables and first weight pages while the previous step's grid
# drains (the kernel waits for it before reading anything it wrote). A launch attribute:
# no rebuild. With the folded I/O, H100 run 16 (docs/performance.md): whole replays
# 0.04-0.15 ms faster than neither, at every view count and horizon.
PDL_ENV = "FLASH_RT_MK_PDL"


def default_splitk_scale(horizon: int) -> int:
    tpad = -(-horizon // TOKEN_PAD) * TOKEN_PAD
    return 2 if tpad >= SPLITK_SCALE_2_FROM_TPAD else 1


def expert_dims(d: Any, rows: int | None = None, kv_only_last: bool = False) -> ExpertDims:
    """ExpertDims from the pipeline's PaliGemmaDims, for its action tokens or ``rows``."""
    scale = os.environ.get(SPLITK_SCALE_ENV)
    rows = d.horizon if rows is None else rows
    return ExpertDims(horizon=rows, width=d.ex_width, mlp=d.ex_mlp, heads=d.heads,
                      kv_heads=d.kv_heads, head_dim=d.head_dim, depth=d.depth,
                      cache_rows=d.cache_rows,
                      splitk_scale=int(scale) if scale else default_splitk_scale(rows),
                      kv_only_last=kv_only_last,
                      grouped_deps=os.environ.get(GROUPED_DEPS_ENV, "0") == "1")


def megakernel_unsupported(d: Any, weights: dict[str, torch.Tensor]) -> str | None:
    """Why this engine cannot use the kernel (None: it can)."""
    reason = unsupported_reason(expert_dims(d))
    if reason is None and any(f"ex.{i}.{s}.ws" not in weights
                              for i in range(d.depth) for s in WEIGHT_SITES):
        reason = "needs the action expert's Linears in FP8 (precision mode keeps them bf16)"
    return reason


def _folds_io(kernels: Any) -> bool:
    """Whether the kernel module can take the step's action projections and the environment
    lets it (see the module doc)."""
    return (kernels is not None and os.environ.get(FOLD_IO_ENV, "1") != "0"
            and bool(getattr(kernels, "expert_megakernel_folds_io", lambda: False)()))


def sync_words(counters: int, blocks: int) -> int:
    """int32 words of the kernel's counters buffer, enough for either build of the module
    (the binding's expert_megakernel_sync_words: a counter each and one more, or one a
    counter and block and two more with FLASH_RT_MK_BLOCK_FLAGS; ~80 KB at most)."""
    return counters * blocks + 2


def pack_weights(ed: ExpertDims, weights: dict[str, torch.Tensor],
                 device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed FP8 weight tiles, per-Linear weight scales) in the kernel's reading order."""
    entries, nbytes = pack_plan(ed)
    wpack = torch.empty(nbytes, dtype=torch.uint8, device=device)
    for e in entries:
        w = weights[f"ex.{e.layer}.{e.site}.w"].view(torch.uint8)
        n = e.tiles * e.k_slices * 64 * e.klen
        wpack[e.offset:e.offset + n].copy_(pack_tile_major(w, e))
    wscale = torch.stack([weights[f"ex.{i}.{s}.ws"].reshape(()).float()
                          for i in range(ed.depth) for s in WEIGHT_SITES]).to(device)
    return wpack, wscale


def block_count(device: Any) -> int:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev).multi_processor_count
    return EMULATED_BLOCKS


# The scale-table site of a pass's first layer's QKV input (formatted with the step);
# the kernel finds every other site of the pass from it (4 per layer, in WEIGHT_SITES order).
ACTION_SCALES = "ex.{step}.0.qkv"


class ExpertMegakernel:
    """One pass of the expert's layers over ``rows`` tokens (default: the action tokens,
    one denoising step per :meth:`run`). ``kv_only_last``: the last layer stops after its
    QKV (the pass's K/V are all that is used); ``scale_site``: the pass's first scale site
    (see ACTION_SCALES); ``packed``: a kernel of the same engine whose packed weights this
    one reads instead of packing its own (the weights do not depend on the rows)."""

    def __init__(self, d: Any, weights: dict[str, torch.Tensor], acts: Any, device: Any,
                 blocks: int | None = None, *, step_inputs: StepInputs,
                 plain_residual: bool = False, fold_in: bool = False, kernels: Any = None,
                 rows: int | None = None, kv_only_last: bool = False,
                 scale_site: str = ACTION_SCALES, packed: "ExpertMegakernel | None" = None):
        reason = megakernel_unsupported(d, weights)
        if reason:
            raise ValueError(f"expert megakernel: {reason}")
        ed = expert_dims(d, rows, kv_only_last)
        if packed is not None:  # its tiles' K split (O, down) is part of the packed layout
            ed = replace(ed, splitk_scale=packed.dims.splitk_scale)
        self.dims = ed
        self.schedule = build_schedule(ed, blocks or block_count(device))
        tables = self.schedule.tables()
        self.tables = {k: torch.from_numpy(v).to(device) for k, v in tables.items()}
        if packed is not None:
            self.wpack, self.wscale = packed.wpack, packed.wscale
        else:
            self.wpack, self.wscale = pack_weights(ed, weights, device)
        z = lambda *shape, dtype: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        tp = ed.tpad
        self.scratch = {
            "act_w": z(tp, ed.width, dtype=torch.float8_e4m3fn),
            "act_attn": z(tp, ed.q_dim, dtype=torch.float8_e4m3fn),
            "act_mlp": z(tp, ed.mlp, dtype=torch.float8_e4m3fn),
            "part": z(MAX_SPLIT_K, tp, ed.width, dtype=torch.float32),
            "part_o": z(ed.splits * ed.attn_rows * ed.head_dim, dtype=torch.float32),
            "part_lse": z(ed.splits * ed.attn_rows, dtype=torch.float32),
            "counters": z(sync_words(self.schedule.counters, self.schedule.blocks),
                          dtype=torch.int32),
        }
        self.step_inputs, self.scale_site = step_inputs, scale_site
        # rows of a constant adaRMS table for an expert without one (see the module doc)
        self.identity_mod = z(2 * ed.depth + 1, 3 * ed.width, dtype=torch.float32)
        self.folds_out = _folds_io(kernels) and all(k in weights for k in FOLD_OUT_WEIGHTS)
        self.folds_in = (self.folds_out and fold_in
                         and all(k in weights for k in FOLD_IN_WEIGHTS))
        self.sizes = dict(kernel_sizes(ed, self.schedule, tables, rope_rows=d.cache_rows),
                          plain_residual=int(plain_residual), fold_in=int(self.folds_in),
                          fold_out=int(self.folds_out), action_dim=d.action_dim, steps=d.steps,
                          pdl=int(os.environ.get(PDL_ENV, "1") != "0"),
                          counter_words=self.scratch["counters"].numel())
        self.eps, self.attn_scale, self.theta = d.ex_eps, d.head_dim ** -0.5, d.theta
        self._fixed = {**{k: v.data_ptr() for k, v in self.tables.items()},
                       **{k: v.data_ptr() for k, v in self.scratch.items()},
                       "wpack": self.wpack.data_ptr(), "wscale": self.wscale.data_ptr(),
                       "x": acts["dec_x"], "xn": acts["dec_xn"], "q": acts["dec_q"],
                       "k_cache": acts["k_cache"], "v_cache": acts["v_cache"],
                       "rope": acts["rope_cs"]}
        if self.folds_out:
            folded = FOLD_OUT_WEIGHTS + (FOLD_IN_WEIGHTS if self.folds_in else ())
            self._fixed.update(act_x=acts["x"], act_x_bf16=acts["x_bf16"],
                               **{k.replace(".", "_"): weights[k].data_ptr() for k in folded})

    def run(self, ctx: Any, step: int, trace: torch.Tensor | None = None) -> None:
        """All expert layers of denoising step ``step`` and the final norm: dec_x (the
        action-in projection's output) -> dec_xn (the action-out projection's input); with
        ``folds_in`` from x_bf16, with ``folds_out`` on to the Euler update of x / x_bf16.
        ``trace``: int64 (tasks, TRACE_STAMPS) receiving each task's times (ns): wait start,
        run start, inputs in, math done, body end, signalled (csrc/megakernel/task_table.h)."""
        inp = self.step_inputs(ctx, step)
        ptrs = dict(self._fixed, ascale=ctx.scale(self.scale_site.format(step=step)),
                    mod=inp.get("mod", self.identity_mod.data_ptr()),
                    positions=inp["positions"], valid_len=inp["keys_end"],
                    key_mask=ctx.inp.key_mask)
        if trace is not None:
            ptrs["trace"] = trace.data_ptr()
        ctx.k.expert_megakernel(ptrs, self.sizes, self.eps, self.attn_scale, self.theta,
                                ctx.stream)

    def new_trace(self) -> torch.Tensor:
        """A zeroed trace buffer for :meth:`run` (int64, tasks x TRACE_STAMPS)."""
        return torch.zeros(len(self.schedule.row_phases()), TRACE_STAMPS, dtype=torch.int64,
                           device="cuda")

    def phase_profile(self, trace: torch.Tensor) -> dict[str, dict[str, float]]:
        """Per kind of phase (norm_in, qkv, ...), averaged over layers, in microseconds:
        span (first start to last signal), mean / max task run time (start to signal), mean
        wait, and the mean run split into inputs (activation / weights landed, or a norm's
        loads), math (MMAs, or a norm's reduction), epilogue (the rest of the body) and
        signal (barrier, fence, release). Attention: inputs = Q / K / V landed, math = the
        scores, softmax and PV, epilogue = storing the partials. Combine tasks set no inner
        stamps: their whole body counts as epilogue."""
        t = trace.cpu().numpy().astype(np.float64)
        WAIT, RUN, INPUTS, MATH, BODY, END = range(TRACE_STAMPS)
        phase_of = self.schedule.row_phases()
        acc: dict[str, list[list[float]]] = {}
        for idx, ph in enumerate(self.schedule.phases):
            r = t[phase_of == idx]
            run = r[:, END] - r[:, RUN]
            acc.setdefault(ph.name.split(".")[0], []).append([
                r[:, END].max() - r[:, RUN].min(), run.mean(), run.max(),
                (r[:, RUN] - r[:, WAIT]).mean(), (r[:, INPUTS] - r[:, RUN]).mean(),
                (r[:, MATH] - r[:, INPUTS]).mean(), (r[:, BODY] - r[:, MATH]).mean(),
                (r[:, END] - r[:, BODY]).mean()])
        names = ("span_us", "run_mean_us", "run_max_us", "wait_mean_us", "inputs_us",
                 "math_us", "epilogue_us", "signal_us")
        out = {k: dict(zip(names, (np.mean(np.asarray(v), 0) / 1e3).round(3).tolist()),
                       phases=len(v)) for k, v in acc.items()}
        # attention per key split (task k0), over layers and row blocks: run time and the
        # inputs part, to see whether the split holding the step's own K/V rows (loaded
        # after the wait, not prefetched) is the phase's slowest
        attn = np.isin(phase_of, [i for i, ph in enumerate(self.schedule.phases)
                                  if ph.name.startswith("attn.")])
        if attn.any():
            split = self.schedule.tables()["tasks"][attn, TASK_FIELDS.index("k0")]
            r = t[attn]

            def mean_us(rows, a, b):
                return round(float((rows[:, b] - rows[:, a]).mean()) / 1e3, 3)
            out["attn"]["by_split"] = {
                int(s): {"run_us": mean_us(r[split == s], RUN, END),
                         "inputs_us": mean_us(r[split == s], RUN, INPUTS)}
                for s in np.unique(split)}
        return out | {"total_us": float((t[:, END].max() - t[:, WAIT].min()) / 1e3)}
