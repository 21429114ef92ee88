"""The persistent expert kernel's schedule and weight packing, checked on the CPU.

What the GPU cannot be asked cheaply: that the task tables agree with the kernel's header,
that every block list runs to the end under counter semantics (no deadlock, for any SM
count), that no two tasks of a phase race on a buffer, that the packed pages hold exactly
the weight tiles the epilogues assume, and that the kernel's contract (interpreted on
the CPU from the same tables and packed bytes) computes what the kernel sequence does.
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from flash_rt.configs import load_config
from flash_rt.core.task_schedule import Schedule, Task, find_races, simulate
from flash_rt.core.weight_spec import interleave_rows
from flash_rt.models.common import expert_schedule as es
from flash_rt.models.common.expert_megakernel import expert_dims, megakernel_unsupported
from flash_rt.models.common.paligemma_pipeline import PaliGemmaDims
from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP
from flash_rt.tools.expert_testbed import ExpertTestbed

from .emulated_kernels import EmulatedKernels

ROOT = Path(__file__).resolve().parents[2]
HEADER = (ROOT / "csrc/megakernel/task_table.h").read_text()


def dims(preset="full", depth=None, **over) -> es.ExpertDims:
    cfg = load_config("pi05", preset, **over)
    if depth:
        cfg = dataclasses.replace(cfg, prefix=dataclasses.replace(cfg.prefix, depth=depth),
                                  expert=dataclasses.replace(cfg.expert, depth=depth))
    return expert_dims(PaliGemmaDims.from_config(cfg, 592))


def header_const(name: str) -> int:
    m = re.search(rf"constexpr int {name} = ([0-9]+);", HEADER)
    assert m, name
    return int(m.group(1))


# sm_90's opt-in shared memory per block, and the kernel's own use before the tables: the
# weight ring, the work area and the padded mbarriers (csrc/expert_megakernel.cu kSmemBytes).
SM90_SMEM_PER_BLOCK = 232_448
KERNEL_SMEM = es.WEIGHT_SLOTS * es.TILE_ROWS * es.PAGE_K + es.WORK_BYTES + 48


@pytest.mark.parametrize("views,horizon", [(1, 10), (2, 50), (3, 10), (3, 50)])
@pytest.mark.parametrize("blocks", [132, 114])  # H100 SXM / PCIe
def test_each_blocks_tables_fit_in_shared_memory(views, horizon, blocks):
    """The kernel copies every block's task and page rows into shared memory at launch
    (scheduler.cuh block_tables) and refuses a launch whose largest block's do not fit."""
    sched = es.build_schedule(dims(num_views=views, horizon=horizon), blocks)
    t = sched.tables()
    need = es.block_table_bytes(t)
    b = int(np.argmax(np.diff(t["task_start"])))
    assert need >= 32 * int(np.diff(t["task_start"])[b]) > 0
    assert need % 16 == 0 and KERNEL_SMEM + need <= SM90_SMEM_PER_BLOCK


def test_op_codes_fields_and_sizes_match_the_kernel_header():
    ops = re.findall(r"^\s*k([A-Za-z]+) = ([0-9]+),", HEADER, re.M)
    codes = {name: int(v) for name, v in ops if name != "NumOps"}
    assert list(codes.values()) == list(range(len(es.OP_NAMES)))
    snake = [re.sub(r"(?<!^)([A-Z])", r"_\1", n).lower() for n in codes]
    assert snake == ["norm_in", "qkv", "attn", "combine", "o_proj", "norm_mid", "gate_up",
                     "down", "norm_out"]
    fields = re.findall(r"^\s*int32_t ([a-z_0-9]+);", HEADER, re.M)
    from flash_rt.core.task_schedule import TASK_FIELDS
    assert tuple(fields) == TASK_FIELDS
    assert header_const("kTileRows") == es.TILE_ROWS
    assert header_const("kPageK") == es.PAGE_K
    assert header_const("kWeightSlots") == es.WEIGHT_SLOTS
    assert header_const("kNormTokens") == es.NORM_TOKENS
    assert header_const("kTraceStamps") == es.TRACE_STAMPS
    assert header_const("kMaxSplitK") == es.MAX_SPLIT_K
    assert header_const("kCombineCols") == es.COMBINE_COLS
    tasks_cuh = (ROOT / "csrc/megakernel/expert_tasks.cuh").read_text()
    assert f"kCombineMaxSplits = {es.MAX_SPLITS};" in tasks_cuh
    # the work area = one attention tile (64 query rows + one 64-key K and V tile, rows
    # padded by 8 bf16) in the v2 kernel's layout
    assert es.WORK_BYTES == (es.ATTN_ROWS + 2 * es.ATTN_KEYS) * (256 + 8) * 2


@pytest.mark.parametrize("blocks", [132, 114, 16, 1])
@pytest.mark.parametrize("views, horizon", [(2, 50), (3, 10)])
def test_full_schedule_completes_and_its_pages_match_its_tasks(blocks, views, horizon):
    d = dims(num_views=views, horizon=horizon)
    sched = es.build_schedule(d, blocks)
    order = simulate(sched, rng=random.Random(blocks))
    assert len(order) == sum(len(p.tasks) for p in sched.phases)
    t = sched.tables()
    plan, total = es.pack_plan(d)
    per_layer = ((d.heads + 2) * d.head_dim * d.width + d.width * d.q_dim
                 + 2 * d.mlp * d.width + d.width * d.mlp)
    assert total == d.depth * per_layer  # every FP8 weight byte of the expert, once
    for b in range(blocks):
        tasks = t["tasks"][t["task_start"][b]:t["task_start"][b + 1]]
        pages = t["pages"][t["page_start"][b]:t["page_start"][b + 1]]
        gemm = tasks[np.isin(tasks[:, 0], [es.QKV, es.O_PROJ, es.GATE_UP, es.DOWN])]
        assert len(pages) == sum(-(-k // es.PAGE_K) for k in gemm[:, 4])
        assert (pages[:, 1] <= es.TILE_ROWS * es.PAGE_K).all() and (pages[:, 1] % 16 == 0).all()
        # every page of a task is waited for before its first MMA: they must fit the ring
        assert (-(-gemm[:, 4] // es.PAGE_K) <= es.WEIGHT_SLOTS).all()
        assert (pages[:, 0] >= 0).all() and (pages.sum(1) <= total).all()
        # each block runs its phases in order (what makes in-order execution deadlock-free)
        assert (np.diff(tasks[:, 7]) >= 0).all()
    # every weight byte is read exactly once per step
    covered = np.zeros(total, dtype=np.int32)
    for off, n in t["pages"]:
        covered[off:off + n] += 1
    assert (covered == 1).all()


def test_a_block_list_out_of_phase_order_deadlocks():
    sched = Schedule(2)
    sched.add("a", [Task(0, 0), Task(0, 0)])
    sched.add("b", [Task(1, 0), Task(1, 0)])
    sched._lists[0].reverse()  # block 0 would wait for phase a's tasks, one of them its own
    with pytest.raises(RuntimeError, match="deadlocks"):
        simulate(sched)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("preset, horizon", [("small", 50), ("small", 10), ("full", 10)])
def test_schedule_is_race_free(preset, horizon, grouped):
    d = dataclasses.replace(dims(preset, depth=2, num_views=1, horizon=horizon),
                            grouped_deps=grouped)
    sched = es.build_schedule(d, 16)
    assert find_races(sched, es.task_accesses(d)) == []


@pytest.mark.parametrize("views, horizon, o_groups", [(1, 10, 1), (2, 50, 4), (1, 16, 8)])
def test_grouped_dependencies_wait_for_the_producers_of_their_inputs(views, horizon, o_groups):
    """FLASH_RT_MK_GROUPED_DEPS: each down task waits for the gate/up tiles of its K slice
    and each O task for the combine tasks of its heads (when no combine task spans two O
    slices, as at horizon 10 with one head per slice: then O waits for the whole phase)."""
    d = dataclasses.replace(dims(num_views=views, horizon=horizon), grouped_deps=True)
    sched = es.build_schedule(d, 132)
    simulate(sched, rng=random.Random(views))
    t = sched.tables()["tasks"]
    op, wait_ctr, target, signal = t[:, 0], t[:, 5], t[:, 6], t[:, 7]
    layer0 = t[:, 1] == 0
    gate_up = layer0 & (op == es.GATE_UP)
    down = layer0 & (op == es.DOWN)
    # gate/up tile g makes MLP columns 32 g .. 32 g + 31: the K slice g * 32 // down_klen
    slice_ctr = {}
    for row in t[gate_up]:
        slice_ctr.setdefault(row[2] * 32 // d.down_klen, set()).add(int(row[7]))
    assert all(len(c) == 1 for c in slice_ctr.values()) and len(slice_ctr) == d.down_splits
    tiles_per_slice = d.down_klen // 32
    for row in t[down]:
        assert row[5] == next(iter(slice_ctr[row[3] // d.down_klen])) and row[6] == tiles_per_slice
    assert len(set(signal[down])) == 1  # the next norm waits for all of down again
    o, combine = layer0 & (op == es.O_PROJ), layer0 & (op == es.COMBINE)
    group_tasks = Counter(signal[combine].tolist())
    assert len(set(wait_ctr[o])) == o_groups == len(group_tasks)
    assert all(group_tasks[c] == n for c, n in zip(wait_ctr[o].tolist(), target[o].tolist()))
    small = dataclasses.replace(dims("small", depth=1, num_views=views, horizon=horizon),
                                grouped_deps=True)
    assert find_races(es.build_schedule(small, 16), es.task_accesses(small)) == []


def test_race_check_finds_a_consumer_waiting_for_the_wrong_group():
    d = dims("full", depth=1, num_views=1, horizon=10)  # (8 K slices of down)
    good = es.build_schedule(d, 8)
    bad = Schedule(8)
    gate_up, down = good.phases[6].tasks, good.phases[7].tasks
    assert (gate_up[0].op, down[0].op) == (es.GATE_UP, es.DOWN)
    bad.add("gate_up", gate_up, groups=lambda t: t.tile * 32 // d.down_klen)
    # each down task waits for the next slice's tiles instead of its own
    bad.add("down", down, waits_for_group=lambda t: (t.k0 // t.klen + 1) % d.down_splits)
    problems = find_races(bad, es.task_accesses(d))
    assert problems and all("act_mlp" in p and "another group" in p for p in problems)
    right = Schedule(8)
    right.add("gate_up", gate_up, groups=lambda t: t.tile * 32 // d.down_klen)
    right.add("down", down, waits_for_group=lambda t: t.k0 // t.klen)
    assert find_races(right, es.task_accesses(d)) == []


def test_grouped_phases_refuse_what_would_leave_tasks_unordered():
    def phase(op, n):
        return [Task(op, 0, i) for i in range(n)]
    s = Schedule(4)
    s.add("a", phase(0, 4), groups=lambda t: t.tile % 2)
    with pytest.raises(ValueError, match="give waits_for_group"):
        s.add("b", phase(1, 4))
    with pytest.raises(ValueError, match="no task waits"):
        s.add("b", phase(1, 4), waits_for_group=lambda t: 0)
    with pytest.raises(ValueError, match="does not have"):
        s.add("b", phase(1, 4), waits_for_group=lambda t: 2)
    with pytest.raises(ValueError, match="two grouped phases"):
        s.add("b", phase(1, 4), groups=lambda t: 0, waits_for_group=lambda t: t.tile % 2)
    b = s.add("b", phase(1, 4), waits_for_group=lambda t: t.tile % 2)
    assert [b.wait(i) for i in range(4)] == [(0, 2), (1, 2), (0, 2), (1, 2)]
    assert s.counters == 3 and b.signal(0) == 2
    with pytest.raises(ValueError, match="needs a grouped phase"):
        s.add("c", phase(2, 1), waits_for_group=lambda t: 0)
    s.add("c", phase(2, 1))
    assert s.phases[2].wait(0) == (2, 4)
    assert len(simulate(s, rng=random.Random(0))) == 9


def test_phase_profile_splits_each_task_run_into_its_stamps():
    """A synthetic trace with known stamps: every phase reports them back (us)."""
    from flash_rt.models.common.expert_megakernel import ExpertMegakernel
    d = dims("small", depth=2, num_views=1, horizon=10)
    holder = type("Holder", (), {"schedule": es.build_schedule(d, 16)})()
    n = len(holder.schedule.row_phases())
    # per task, ns after its wait start: run +1000, inputs +3000, math +3500, body +6000,
    # signalled +7000; tasks of phase p start at p * 10 us
    offsets = np.array([0, 1000, 3000, 3500, 6000, 7000], dtype=np.int64)
    start = holder.schedule.row_phases() * 10_000
    trace = torch.as_tensor(start[:, None] + offsets[None, :])
    assert trace.shape == (n, es.TRACE_STAMPS)
    prof = ExpertMegakernel.phase_profile(holder, trace)
    for kind in ("norm_in", "qkv", "attn", "down", "norm_out"):
        p = prof[kind]
        assert p["wait_mean_us"] == 1.0 and p["run_mean_us"] == 6.0 == p["run_max_us"]
        assert (p["inputs_us"], p["math_us"], p["epilogue_us"], p["signal_us"]) == \
            (2.0, 0.5, 2.5, 1.0)
        assert p["span_us"] == 6.0
    assert prof["qkv"]["phases"] == 2 and prof["norm_out"]["phases"] == 1
    assert prof["total_us"] == (start.max() + 7000) / 1e3


def test_phase_profile_reports_attention_per_key_split():
    """Attention tasks of split s made s us slower: the per-split rows say so."""
    from flash_rt.models.common.expert_megakernel import ExpertMegakernel
    d = dims("small", depth=2, num_views=1, horizon=10)
    holder = type("Holder", (), {"schedule": es.build_schedule(d, 16)})()
    rows = holder.schedule.tables()["tasks"]
    offsets = np.array([0, 1000, 3000, 3500, 6000, 7000], dtype=np.int64)
    trace = np.tile(offsets, (len(rows), 1)) + holder.schedule.row_phases()[:, None] * 10_000
    attn = rows[:, 0] == es.ATTN
    trace[attn, 2:] += 1000 * rows[attn, 3, None]  # inputs and everything after: +s us
    prof = ExpertMegakernel.phase_profile(holder, torch.as_tensor(trace))
    by = prof["attn"]["by_split"]
    assert sorted(by) == list(range(d.splits)) and d.splits > 2
    assert all(by[s] == {"run_us": 6.0 + s, "inputs_us": 2.0 + s} for s in by), by


def test_a_kv_only_pass_stops_after_its_last_qkv():
    """Pi0's state-token pass: one row, the last layer only norm_in and QKV (its K/V are
    the pass's only use), no final norm; deadlock- and race-free like a full step."""
    full = dims("small", depth=3, num_views=1, horizon=10)
    d = dataclasses.replace(full, horizon=1, kv_only_last=True)
    sched = es.build_schedule(d, 16)
    names = [ph.name for ph in sched.phases]
    assert names[-2:] == ["norm_in.2", "qkv.2"] and "norm_out" not in names
    assert len(names) == 8 * 2 + 2
    assert len(simulate(sched, rng=random.Random(3))) == sum(len(ph.tasks) for ph in sched.phases)
    assert find_races(sched, es.task_accesses(d)) == []
    assert len(sched.phases[0].tasks) == 1  # one norm task: one row


def test_race_check_finds_two_phases_merged_into_one():
    d = dims("small", depth=1, num_views=1, horizon=10)
    good = es.build_schedule(d, 8)
    bad = Schedule(8)
    # the QKV tasks and the attention that reads their output without a counter between
    bad.add("qkv+attn", good.phases[1].tasks + good.phases[2].tasks)
    problems = find_races(bad, es.task_accesses(d))
    assert problems and any("q(" in p for p in problems), problems[:3]


def test_packed_pages_hold_the_reordered_weight_tiles():
    d = dims("small", depth=1, num_views=1, horizon=10)
    gen = torch.Generator().manual_seed(0)
    plan, total = es.pack_plan(d)
    packed = torch.zeros(total, dtype=torch.uint8)
    weights = {}
    for e in plan:
        n, k = len(e.row_order), e.k_slices * e.klen
        w = torch.randint(0, 255, (n, k), generator=gen, dtype=torch.uint8)
        weights[e.site] = w
        flat = es.pack_tile_major(w, e)
        packed[e.offset:e.offset + flat.numel()] = flat
    sched = es.build_schedule(d, 4)
    for ph in sched.phases:
        for t in ph.tasks:
            if not t.pages:
                continue
            site = {es.QKV: "qkv", es.O_PROJ: "o", es.GATE_UP: "gate_up", es.DOWN: "down"}[t.op]
            e = next(x for x in plan if x.site == site)
            tile = torch.cat([packed[o:o + n].view(n // 64 // 16, 64, 16).permute(1, 0, 2)
                              .reshape(64, -1) for o, n in t.pages], 1)
            rows = torch.as_tensor(e.row_order[t.tile * 64:(t.tile + 1) * 64])
            assert torch.equal(tile, weights[site][rows, t.k0:t.k0 + t.klen])


def test_row_orders_pair_the_epilogue_operands():
    d = dims("full", depth=1)
    q = es.qkv_row_order(d)
    assert sorted(q.tolist()) == list(range((d.heads + 2) * d.head_dim))
    half = d.head_dim // 2
    r = np.arange(len(q))
    lo = (r % 16) < 8  # accumulator rows r0 (lo) and r0 + 8 hold a RoPE pair
    assert (q[r[lo] + 8] - q[r[lo]] == half).all()
    assert (q[r[lo]] // d.head_dim == q[r[lo] + 8] // d.head_dim).all()
    # gate/up: packed row -> the checkpoint's row (gate rows [0, F), up rows [F, 2F)),
    # through the weight spec's interleave and the kernel's packing
    spec_rows = interleave_rows([torch.arange(d.mlp), torch.arange(d.mlp, 2 * d.mlp)],
                                GATE_UP_GROUP).numpy()
    g = spec_rows[es.gate_up_row_order(d)]
    assert sorted(g.tolist()) == list(range(2 * d.mlp))
    r = np.arange(len(g))
    lo = (r % 16) < 8
    assert (g[r[lo]] < d.mlp).all() and (g[r[lo] + 8] - g[r[lo]] == d.mlp).all()


def test_splitk_scale_sets_the_k_per_o_and_down_task(monkeypatch):
    monkeypatch.delenv("FLASH_RT_MK_SPLITK_SCALE", raising=False)
    # the default: twice the K from tpad 64 (measured faster there), one head / page below
    assert [dims("full", horizon=h).splitk_scale for h in (10, 16, 48, 49, 50, 64)] == \
        [1, 1, 1, 2, 2, 2]
    monkeypatch.setenv("FLASH_RT_MK_SPLITK_SCALE", "1")
    assert dims("full", horizon=50).splitk_scale == 1
    d = dims("full", horizon=10)
    assert (d.o_klen, d.o_splits, d.down_klen, d.down_splits) == (256, 8, 512, 8)
    d2 = dataclasses.replace(d, splitk_scale=2)
    assert (d2.o_klen, d2.o_splits, d2.down_klen, d2.down_splits) == (512, 4, 1024, 4)
    assert es.unsupported_reason(d2) is None
    assert "divide the heads" in es.unsupported_reason(dataclasses.replace(d, splitk_scale=3))
    sched = es.build_schedule(d2, 132)
    o = [t for t in sched.phases[4].tasks]
    assert sched.phases[4].name == "o.0" and {t.klen for t in o} == {512} and len(o) == 16 * 4


def test_unsupported_models_are_named():
    tiny = dims("tiny")
    assert "head_dim 256" in es.unsupported_reason(tiny)
    with pytest.raises(ValueError, match="head_dim 256"):
        es.build_schedule(tiny, 8)
    assert "horizon" in es.unsupported_reason(dims("full", horizon=100))
    assert es.unsupported_reason(dims("full")) is None
    assert es.unsupported_reason(dims("small")) is None
    cfg = load_config("pi05", "small")
    d = PaliGemmaDims.from_config(cfg, 592)
    assert "FP8" in megakernel_unsupported(d, {})


@pytest.mark.parametrize("model, horizon, views, depth, splitk_scale, grouped",
                         [("pi05", 50, 2, 2, 1, False), ("pi05", 10, 1, 3, 1, False),
                          ("pi05", 10, 1, 2, 2, False), ("pi0", 10, 1, 3, 1, False),
                          ("pi0", 50, 2, 2, 2, False), ("pi05", 50, 2, 2, 2, True),
                          ("pi05", 16, 1, 2, 1, True)])
def test_megakernel_contract_equals_the_kernel_sequence(monkeypatch, model, horizon, views,
                                                        depth, splitk_scale, grouped):
    # the kernel's contract, interpreted from its own tables and packed weights, against
    # the kernel sequence (both emulated on the CPU): the same step from the same state.
    # Not bit-identical: the split-K attention sums in another order, and a rounding
    # difference that moves a value across an FP8 boundary changes it by a whole e4m3 step
    # and the next layers carry it on (seen: 0.99998 at horizon 50 and 2 layers, 0.99987
    # for the last layer's q at horizon 10 and 3 layers of this narrow preset); a wrong
    # tile, row order or scale gives < 0.9. Pi0: its RMSNorm expert (zero adaRMS table,
    # plain residuals) with the state token's row counted as prefix. Grouped dependencies
    # (FLASH_RT_MK_GROUPED_DEPS): an MLP of four 512-wide K slices for down to wait on apart.
    cfg = load_config(model, "small", num_views=views, horizon=horizon)
    mlp = 2048 if grouped else cfg.expert.mlp_dim
    cfg = dataclasses.replace(cfg, prefix=dataclasses.replace(cfg.prefix, depth=depth),
                              expert=dataclasses.replace(cfg.expert, depth=depth, mlp_dim=mlp))
    monkeypatch.setenv("FLASH_RT_MK_SPLITK_SCALE", str(splitk_scale))  # K per O / down task
    monkeypatch.setenv("FLASH_RT_MK_GROUPED_DEPS", str(int(grouped)))
    tb = ExpertTestbed(cfg, EmulatedKernels(), "cpu", blocks=7)
    assert tb.mk.dims.o_splits == tb.mk.dims.heads // splitk_scale
    if grouped:  # down and O each wait for one group of their producers
        assert any(ph.group_size for ph in tb.mk.schedule.phases if ph.name.startswith("gate_up"))
        assert any(ph.group_size for ph in tb.mk.schedule.phases if ph.name.startswith("combine"))
    tb.calibrate([4])
    tb.restore()
    tb.run_sequence(4)
    want = tb.outputs()
    tb.restore()
    tb.acts.t["dec_xn"].fill_(float("nan"))
    tb.run_megakernel(4)
    got = tb.outputs()
    for k in want:
        c = torch.nn.functional.cosine_similarity(got[k].flatten().double(),
                                                  want[k].flatten().double(), 0)
        assert float(c) > 0.999, (k, float(c))
    assert int(tb.mk.scratch["counters"].abs().sum()) == 0


def test_block_flags_order_the_launch_as_the_counters_do():
    # FLASH_RT_MK_BLOCK_FLAGS' words (one a counter and block, tagged with the launch's
    # epoch; emulated as scheduler.cuh keeps them) over three launches in a row, against
    # the counters: the same interleavings are possible (the same seed picks the same order,
    # so the outputs are bit-identical), and every launch leaves the words reusable without
    # zeroing them: the finished count at zero, the epoch advanced, no signal carrying the
    # next launch's tag. A wait that counted an earlier launch's signals would let a task
    # run before its inputs and change the outputs.
    cfg = load_config("pi05", "small", num_views=1, horizon=16)
    cfg = dataclasses.replace(cfg, prefix=dataclasses.replace(cfg.prefix, depth=2),
                              expert=dataclasses.replace(cfg.expert, depth=2))
    outs = {}
    for flags in (False, True):
        k = EmulatedKernels()
        k.block_flags = flags
        tb = ExpertTestbed(cfg, k, "cpu", blocks=5)
        tb.calibrate([2])
        tb.restore()
        for step in (2, 3, 4):
            tb.run_megakernel(step)
        outs[flags] = tb.outputs()
        words = tb.mk.scratch["counters"]
        n, blocks = tb.mk.schedule.counters, tb.mk.schedule.blocks
        if not flags:
            assert int(words.abs().sum()) == 0
            continue
        assert words.numel() >= k.expert_megakernel_sync_words(n, blocks) == n * blocks + 2
        assert [int(v) for v in words[n * blocks:n * blocks + 2]] == [0, 3]
        flag = words[:n * blocks].to(torch.int64) & 0xFFFFFFFF
        signalled = flag[(flag & 0xFFFF) > 0]
        assert set((signalled >> 16).tolist()) == {2}  # the last launch's (epoch 2) tag
    for key in outs[False]:
        assert torch.equal(outs[False][key], outs[True][key]), key


def test_engine_expert_choice(monkeypatch):
    # the pipeline's choice, FLASH_RT_EXPERT's override, a fallback with its reason when the
    # model cannot use the kernel, and an error when the kernel was asked for explicitly
    # (Pi0 and Pi0.5 alike: Hopper's default is the kernel, run 11)
    from flash_rt.frontends.torch._paligemma_engine import PaliGemmaEngine
    from flash_rt.models.common import paligemma_pipeline as pp
    from flash_rt.models.pi0.pipeline_hopper import PIPELINE as PI0_HOPPER
    from flash_rt.models.pi05.pipeline_hopper import PIPELINE
    small = PaliGemmaDims.from_config(load_config("pi05", "small"), 592)
    tiny = PaliGemmaDims.from_config(load_config("pi05", "tiny"), 592)
    pi0 = PaliGemmaDims.from_config(load_config("pi0", "small"), 592)
    fp8 = {f"ex.{i}.{s}.ws": torch.ones(1) for i in range(2) for s in es.WEIGHT_SITES}
    choose = PaliGemmaEngine._choose_expert
    monkeypatch.delenv("FLASH_RT_EXPERT", raising=False)
    # Hopper's default: the persistent kernel at every horizon (runs 10-11)
    assert PIPELINE.expert == pp.MEGAKERNEL and PIPELINE.megakernel_max_horizon is None
    assert PI0_HOPPER.expert == pp.MEGAKERNEL and PI0_HOPPER.megakernel_max_horizon is None
    small_h10 = PaliGemmaDims.from_config(load_config("pi05", "small", horizon=10), 592)
    assert small.horizon == 50
    assert choose(PIPELINE, small_h10, fp8)[0] == pp.MEGAKERNEL
    assert choose(PIPELINE, small, fp8)[0] == pp.MEGAKERNEL
    assert choose(PI0_HOPPER, pi0, fp8)[0] == pp.MEGAKERNEL
    # a pipeline that caps the kernel's horizon takes the sequence above the cap
    capped = dataclasses.replace(PIPELINE, megakernel_max_horizon=16)
    small_h16 = PaliGemmaDims.from_config(load_config("pi05", "small", horizon=16), 592)
    assert choose(capped, small_h16, fp8)[0] == pp.MEGAKERNEL
    path, why = choose(capped, small, fp8)
    assert path == pp.SEQUENCE and "horizon 50" in why
    mk = PIPELINE
    path, why = choose(mk, tiny, fp8)
    assert path == pp.SEQUENCE and "head_dim 256" in why
    assert choose(dataclasses.replace(PI0_HOPPER, expert=pp.SEQUENCE), pi0, fp8)[0] == \
        pp.SEQUENCE
    monkeypatch.setenv("FLASH_RT_EXPERT", "megakernel")
    assert choose(PIPELINE, small, fp8)[0] == pp.MEGAKERNEL
    with pytest.raises(ValueError, match="head_dim 256"):
        choose(PIPELINE, tiny, fp8)
    with pytest.raises(ValueError, match="FP8"):
        choose(PIPELINE, small, {})
    assert choose(PI0_HOPPER, pi0, fp8)[0] == pp.MEGAKERNEL
    with pytest.raises(ValueError, match="FLASH_RT_EXPERT=megakernel: .*FP8"):
        choose(PI0_HOPPER, pi0, {})
    monkeypatch.setenv("FLASH_RT_EXPERT", "sequence")
    assert choose(PI0_HOPPER, pi0, fp8)[0] == pp.SEQUENCE
    monkeypatch.setenv("FLASH_RT_EXPERT", "fast")
    with pytest.raises(ValueError, match="expected 'sequence' or 'megakernel'"):
        choose(PIPELINE, small, fp8)
