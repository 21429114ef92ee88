"""Observation assembly: safety refusals, tear-free slots, no reallocation."""
import numpy as np
import pytest

from flash_rt_ros.assembly import NotReady, ObservationAssembler
from flash_rt_ros.encodings import MalformedFrame

H, W = 8, 10
NAMES = ["a", "b", "c"]
S = 1_000_000_000  # ns


def img(v):
    return np.full((H, W, 3), v, np.uint8).tobytes()


def filled(n_cams=2, t=10 * S):
    asm = ObservationAssembler(n_cams, NAMES)
    for c in range(n_cams):
        asm.write_raw(c, t, "rgb8", H, W, W * 3, img(c + 1))
    asm.write_joint_state(t, ["c", "a", "b", "extra"], np.array([3.0, 1.0, 2.0, 9.0]))
    return asm


def test_snapshot_orders_joints_and_stamps():
    obs = filled().snapshot(10 * S + 1, S)
    np.testing.assert_array_equal(obs.state, np.float32([1, 2, 3]))
    assert obs.state.dtype == np.float32
    assert [int(i[0, 0, 0]) for i in obs.images] == [1, 2]
    assert obs.stamp_ns == 10 * S and obs.image_stamps_ns == [10 * S, 10 * S]


@pytest.mark.parametrize("setup,reason", [
    (lambda a: None, "missing_camera"),
    (lambda a: a.write_raw(0, 10 * S, "rgb8", H, W, W * 3, img(1)), "missing_camera"),
])
def test_missing_camera_refused(setup, reason):
    asm = ObservationAssembler(2, NAMES)
    setup(asm)
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S)
    assert err.value.reason == reason


def test_missing_state_refused():
    asm = ObservationAssembler(1, NAMES)
    asm.write_raw(0, 10 * S, "rgb8", H, W, W * 3, img(1))
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S)
    assert err.value.reason == "missing_state"


def test_stale_camera_and_state_refused():
    asm = filled(t=10 * S)
    with pytest.raises(NotReady) as err:
        asm.snapshot(11 * S + 1, S)
    assert err.value.reason == "stale_camera"
    for c in range(2):
        asm.write_raw(c, 12 * S, "rgb8", H, W, W * 3, img(5))
    with pytest.raises(NotReady) as err:
        asm.snapshot(12 * S, S // 2)
    assert err.value.reason == "stale_state"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_state_refused(bad):
    asm = filled()
    asm.write_joint_state(10 * S, NAMES, np.array([0.0, bad, 0.0]))
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S)
    assert err.value.reason == "nonfinite_state"


def test_held_slot_never_torn_and_newest_wins_after_release():
    asm = filled()
    obs = asm.snapshot(10 * S, S)
    held = obs.images[0]
    for v in range(10, 20):  # frames keep arriving during "inference"
        asm.write_raw(0, 10 * S + v, "rgb8", H, W, W * 3, img(v))
        assert (held == 1).all(), "a frame written during inference changed the held slot"
    asm.release(obs)
    obs2 = asm.snapshot(10 * S + 50, S)
    assert int(obs2.images[0][0, 0, 0]) == 19 and obs2.image_stamps_ns[0] == 10 * S + 19


def test_no_buffer_reallocation_after_first_frame():
    asm = filled()
    ptrs = set()
    for k in range(12):
        asm.write_raw(0, 11 * S + k, "rgb8", H, W, W * 3, img(k))
        obs = asm.snapshot(11 * S + k, 2 * S)
        ptrs.add(obs.images[0].__array_interface__["data"][0])
        asm.release(obs)
    assert len(ptrs) <= 3  # the three ring slots, reused


def test_malformed_write_keeps_previous_frame():
    asm = filled()
    with pytest.raises(MalformedFrame):
        asm.write_raw(0, 11 * S, "rgb8", H, W, W * 3, img(7)[:10])
    with pytest.raises(MalformedFrame):
        asm.write_raw(0, 0, "rgb8", H, W, W * 3, img(7))
    obs = asm.snapshot(10 * S, S)
    assert int(obs.images[0][0, 0, 0]) == 1 and obs.image_stamps_ns[0] == 10 * S


def test_joint_state_errors():
    asm = filled()
    with pytest.raises(MalformedFrame) as err:
        asm.write_joint_state(10 * S, ["a", "b"], np.array([1.0, 2.0]))
    assert err.value.cause == "missing_joint"
    with pytest.raises(MalformedFrame) as err:
        asm.write_joint_state(10 * S, NAMES, np.array([1.0, 2.0]))
    assert err.value.cause == "size_mismatch"


def test_state_source_none_feeds_zeros():
    asm = ObservationAssembler(1, NAMES, state_source="none")
    asm.write_raw(0, 10 * S, "rgb8", H, W, W * 3, img(1))
    obs = asm.snapshot(10 * S, S)
    np.testing.assert_array_equal(obs.state, np.zeros(3, np.float32))
