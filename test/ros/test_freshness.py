"""The freshness rule at receipt, at the tick and right before publishing (no rclpy)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flash_rt_ros.assembly import ObservationAssembler
from flash_rt_ros.chunks import ChunkMaker
from flash_rt_ros.encodings import MalformedFrame
from flash_rt_ros.inputs import InputClock
from flash_rt_ros.params import MAX_SEED, NodeParams
from flash_rt_ros.stats import Counters
from flash_rt_ros.tick import Ticker

S = 1_000_000_000
P = NodeParams(joint_names=("a",), max_observation_age_s=0.5, future_stamp_tolerance_s=0.05)


def stamped(ns: int):
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=ns // S,
                                                                        nanosec=ns % S)))


@pytest.mark.parametrize("lead_s", [60.0, 3600.0, 0.051])
def test_input_stamped_ahead_of_the_clock_is_refused_on_receipt(lead_s):
    clock = InputClock(P)
    with pytest.raises(MalformedFrame) as err:
        clock.stamp(stamped(100 * S + int(lead_s * S)), now_ns=100 * S)
    assert err.value.cause == "future_stamp"
    assert clock.stamp(stamped(100 * S + S // 20), now_ns=100 * S) == 100 * S + S // 20


def test_receipt_time_is_never_in_the_future():
    clock = InputClock(NodeParams(joint_names=("a",), stamp_source="receipt"))
    assert clock.stamp(stamped(999 * S), now_ns=5 * S) == 5 * S


def ready_ticker():
    asm = ObservationAssembler(1, ["a"])
    asm.write_raw(0, 10 * S, "rgb8", 2, 2, 6, bytes(12))
    asm.write_joint_state(10 * S - S // 10, ["a"], np.zeros(1))
    counters = Counters()
    return Ticker(asm, P, counters), counters


def test_chunk_whose_stalest_input_aged_past_max_age_during_predict_is_dropped():
    ticker, counters = ready_ticker()
    obs = ticker.tick(10 * S)  # the joint state is 100 ms old, the frame 0 ms
    assert obs is not None
    assert ticker.publishable(obs, 10 * S + S * 4 // 10) == ""  # 500 ms: the edge, fine
    assert ticker.publishable(obs, 10 * S + S * 4 // 10 + 1) == "stale_input"
    assert counters.get("dropped_chunks/stale_input") == 1


def test_chunk_is_dropped_when_the_clock_went_back_during_predict():
    ticker, counters = ready_ticker()
    obs = ticker.tick(10 * S)
    assert ticker.publishable(obs, 10 * S - S // 10) == "future_input"
    assert counters.get("dropped_chunks/future_input") == 1


def test_stale_skips_name_the_camera():
    ticker, counters = ready_ticker()
    assert ticker.tick(11 * S) is None
    assert counters.get("skipped/stale_camera") == 1
    assert counters.get("skipped/stale_camera/camera0") == 1


def test_sequence_seeds_wrap_instead_of_overflowing():
    maker = ChunkMaker(None, NodeParams(joint_names=("a",), seed=MAX_SEED), 1, "cpu", "")
    assert maker.seed_for(None) == MAX_SEED
    maker.sequence = 1
    assert maker.seed_for(None) == 0
