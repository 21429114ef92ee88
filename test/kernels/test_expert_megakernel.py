"""The persistent action-expert kernel against the kernel sequence it replaces (GPU).

Both run one denoising step's layers from the same saved state (random FP8 expert, random
cached prefix with masked keys, scales calibrated the engine's way); every output of the
step must agree: the final adaRMS (the action-out input), the residual stream, the last
layer's queries and every layer's K/V rows of the action tokens. Poisoned outputs show
that the kernel writes them; graph replays that it leaves its counters reusable.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from flash_rt.configs import load_config
from flash_rt.models.pi05.adarms import mod_row
from flash_rt.tools.expert_testbed import ExpertTestbed, drift_allowed

from kutil import FULL


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


def with_depth(cfg, depth: int, **over):
    return dataclasses.replace(cfg, prefix=dataclasses.replace(cfg.prefix, depth=depth),
                               expert=dataclasses.replace(cfg.expert, depth=depth), **over)


CONFIGS = {
    "small_h50": load_config("pi05", "small", num_views=2),
    "full_depth1_h50": with_depth(FULL, 1, num_views=2, horizon=50),
    "full_depth2_h10": with_depth(FULL, 2, num_views=1, horizon=10),
    # every token padding the kernel is built for (16 above, then 32, 48, 64)
    "full_depth1_h24": with_depth(FULL, 1, num_views=1, horizon=24),
    "full_depth1_h40": with_depth(FULL, 1, num_views=1, horizon=40),
    "full_h50_2views": dataclasses.replace(FULL, num_views=2, horizon=50),
    "full_h10_3views": dataclasses.replace(FULL, num_views=3, horizon=10),
    # Pi0's expert (the kernel's PLAIN instance: RMSNorm, plain residuals, state row as prefix)
    "pi0_small_h10": load_config("pi0", "small", num_views=1, horizon=10),
    "pi0_full_h50_2views": load_config("pi0", "full", num_views=2, horizon=50),
}


def compare(tb: ExpertTestbed, step: int) -> tuple[dict[str, float], dict[str, float]]:
    """(megakernel vs sequence, sequence with the flash decoder attention vs sequence) cosines."""
    want, got, alt = tb.outputs_three_ways(step)
    return ({k: cos(got[k], want[k]) for k in want},
            {k: cos(alt[k], want[k]) for k in want})


def assert_counters_reusable(tb, fk) -> None:
    """What every launch leaves in the counters buffer for the next: all zero (the default
    build), or, with FLASH_RT_MK_BLOCK_FLAGS, a zero finished-blocks count and the flags of
    an epoch the next launch does not use (the epoch word after them moved on)."""
    words = tb.mk.scratch["counters"]
    n, blocks = tb.mk.schedule.counters, tb.mk.schedule.blocks
    if int(fk.expert_megakernel_sync_words(n, blocks)) == n + 1:
        assert int(words.abs().sum()) == 0
        return
    done, epoch = (int(v) for v in words[n * blocks:n * blocks + 2].cpu())
    assert done == 0 and epoch > 0
    flags = words[:n * blocks].cpu().to(torch.int64) & 0xFFFFFFFF
    signalled = flags[(flags & 0xFFFF) > 0]
    assert signalled.numel() > 0
    # every signal carries an earlier launch's tag, none the next one's
    assert not bool(((signalled >> 16) == (epoch & 0xFFFF)).any())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_megakernel_matches_the_kernel_sequence(fk, name):
    tb = ExpertTestbed(CONFIGS[name], fk)
    step = 3
    tb.calibrate([step])
    got, floor = compare(tb, step)
    for key in ("xn", "x", "q", "k_rows", "v_rows"):
        allowed = drift_allowed(floor[key])  # (expert_testbed: why this bound)
        assert 1.0 - got[key] <= allowed, (key, got, floor)
    assert all(v == v for v in got.values()), got  # no NaN left by the poison


def test_megakernel_with_longer_split_k_tasks_keeps_the_result(fk, monkeypatch):
    # FLASH_RT_MK_SPLITK_SCALE=2 (two heads per O task, two pages per down task, half the
    # partial slices for each norm) changes only how K is split: the same drift bound
    monkeypatch.setenv("FLASH_RT_MK_SPLITK_SCALE", "2")
    tb = ExpertTestbed(CONFIGS["full_depth2_h10"], fk)
    assert (tb.mk.dims.o_splits, tb.mk.dims.down_splits) == (4, 4)
    tb.calibrate([3])
    got, floor = compare(tb, 3)
    for key in ("xn", "x", "q", "k_rows", "v_rows"):
        assert 1.0 - got[key] <= drift_allowed(floor[key]), (key, got)


@pytest.mark.parametrize("name", ["full_h50_2views", "full_depth2_h10", "full_depth1_h24"])
def test_megakernel_with_grouped_dependencies_keeps_the_result(fk, monkeypatch, name):
    # FLASH_RT_MK_GROUPED_DEPS=1 (down waits for its K slice's gate/up tiles, O for its
    # heads' combine tasks where they align) changes only when tasks start: the same bound
    monkeypatch.setenv("FLASH_RT_MK_GROUPED_DEPS", "1")
    tb = ExpertTestbed(CONFIGS[name], fk)
    assert any(ph.group_size for ph in tb.mk.schedule.phases)
    tb.calibrate([3])
    got, floor = compare(tb, 3)
    for key in ("xn", "x", "q", "k_rows", "v_rows"):
        assert 1.0 - got[key] <= drift_allowed(floor[key]), (key, got)


def test_megakernel_replays_in_a_graph_and_across_steps(fk):
    tb = ExpertTestbed(CONFIGS["full_depth2_h10"], fk)
    tb.calibrate([0, 1])
    outs = {}
    for step in (0, 1):
        tb.restore()
        tb.run_megakernel(step)
        outs[step] = tb.outputs()["xn"]
    # captured once per step, replayed twice: same result as the eager launches (the
    # counters are left at zero by every launch)
    for step in (0, 1):
        tb.restore()
        g = tb.capture_graph(lambda: tb.run_megakernel(step))
        for _ in range(2):
            tb.restore()
            tb.acts.t["dec_xn"].fill_(float("nan"))
            with torch.cuda.stream(tb.torch_stream):
                g.replay()
            # the same math; the order of the split-K atomics may differ between launches
            assert cos(tb.outputs()["xn"], outs[step]) > 0.99999
    assert not torch.equal(outs[0], outs[1])  # the step's tables and scales are used
    assert_counters_reusable(tb, fk)


def test_steps_launched_with_programmatic_dependent_launch_match_plain_launches(fk):
    # Two steps back to back in one graph, the second reading the residual stream (and
    # overwriting the K/V rows) the first wrote. With FLASH_RT_MK_PDL's launch attribute the
    # second grid's blocks start on the SMs the first grid's blocks leave and must wait for
    # the whole first grid before touching any of it: a missing wait is a race here.
    tb = ExpertTestbed(CONFIGS["full_depth2_h10"], fk)
    tb.calibrate([0, 1])

    def two_steps():
        tb.run_megakernel(0)
        tb.run_megakernel(1)

    outs = {}
    for pdl in (0, 1, 0, 1):
        tb.mk.sizes["pdl"] = pdl
        g = tb.capture_graph(two_steps)
        for _ in range(3):
            tb.restore()
            tb.acts.t["dec_xn"].fill_(float("nan"))
            with torch.cuda.stream(tb.torch_stream):
                g.replay()
            torch.cuda.synchronize()
            out = tb.outputs()
            ref = outs.setdefault("plain", out)  # (the first replay: plain launches)
            for key in ("xn", "x", "q", "k_rows", "v_rows"):
                assert cos(out[key], ref[key]) > 0.99999, (pdl, key)
    tb.mk.sizes["pdl"] = 0
    assert_counters_reusable(tb, fk)


def test_megakernel_refuses_bad_sizes(fk):
    tb = ExpertTestbed(CONFIGS["small_h50"], fk)
    ptrs = dict(tb.mk._fixed, ascale=tb.ctx.scale("ex.0.0.qkv"), mod=mod_row(tb.ctx, 0, 0),
                positions=tb.ctx.inp.action_positions, valid_len=tb.ctx.inp.valid_len,
                key_mask=tb.ctx.inp.key_mask)
    with pytest.raises(ValueError, match="missing argument 'x'"):
        fk.expert_megakernel({k: v for k, v in ptrs.items() if k != "x"}, tb.mk.sizes, 1e-6,
                             0.0625, 1e4, tb.stream)
    with pytest.raises(ValueError, match="tpad"):
        fk.expert_megakernel(ptrs, dict(tb.mk.sizes, tpad=24), 1e-6, 0.0625, 1e4, tb.stream)
    with pytest.raises(ValueError, match="blocks"):
        fk.expert_megakernel(ptrs, dict(tb.mk.sizes, blocks=100000), 1e-6, 0.0625, 1e4, tb.stream)
    with pytest.raises(ValueError, match="schedule tables"):
        fk.expert_megakernel(ptrs, dict(tb.mk.sizes, table_bytes=1 << 20), 1e-6, 0.0625, 1e4,
                             tb.stream)
    need = fk.expert_megakernel_sync_words(tb.mk.sizes["counters"], tb.mk.sizes["blocks"])
    with pytest.raises(ValueError, match="counter_words"):
        fk.expert_megakernel(ptrs, dict(tb.mk.sizes, counter_words=need - 1), 1e-6, 0.0625,
                             1e4, tb.stream)
