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


def test_joint_state_errors_keep_previous_state():
    asm = filled()
    with pytest.raises(MalformedFrame) as err:
        asm.write_joint_state(11 * S, NAMES, np.array([1.0, 2.0]))
    assert err.value.cause == "size_mismatch"
    with pytest.raises(MalformedFrame) as err:
        asm.write_joint_state(11 * S, ["a", "b", "a"], np.array([7.0, 7.0, 7.0]))
    assert err.value.cause == "duplicate_joint"
    with pytest.raises(MalformedFrame) as err:
        asm.write_joint_state(0, NAMES, np.array([7.0, 7.0, 7.0]))
    assert err.value.cause == "zero_stamp"
    obs = asm.snapshot(10 * S, S)
    np.testing.assert_array_equal(obs.state, np.float32([1, 2, 3]))
    assert obs.state_stamp_ns == 10 * S


def cams_only(t=10 * S):
    asm = ObservationAssembler(1, NAMES)
    asm.write_raw(0, t, "rgb8", H, W, W * 3, img(1))
    return asm


def test_joints_merge_across_messages_with_their_own_stamps():
    asm = cams_only(t=10 * S)
    asm.write_joint_state(9 * S, ["b", "a", "x"], np.array([2.0, 1.0, 99.0]))  # arm + extra
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S)
    assert err.value.reason == "missing_state" and "c" in str(err.value)
    asm.write_joint_state(10 * S - 5, ["c"], np.array([3.0]))  # the gripper, separately
    asm.write_joint_state(10 * S - 4, ["y", "z"], np.array([5.0, 6.0]))  # none configured
    obs = asm.snapshot(10 * S, 2 * S)
    np.testing.assert_array_equal(obs.state, np.float32([1, 2, 3]))
    assert obs.state_stamp_ns == 9 * S, "the state is as old as its stalest joint"
    assert obs.stamp_ns == 10 * S
    asm.release(obs)
    asm.write_joint_state(10 * S - 3, ["a"], np.array([4.0]))  # a newer value for one joint
    obs = asm.snapshot(10 * S, 2 * S)
    np.testing.assert_array_equal(obs.state, np.float32([4, 2, 3]))
    assert obs.state_stamp_ns == 9 * S  # b still carries the 9 s stamp


def test_stalest_joint_decides_freshness():
    asm = cams_only(t=20 * S)
    asm.write_joint_state(20 * S, ["a", "b"], np.array([1.0, 2.0]))
    asm.write_joint_state(18 * S, ["c"], np.array([3.0]))  # the gripper went quiet
    with pytest.raises(NotReady) as err:
        asm.snapshot(20 * S, S)
    assert err.value.reason == "stale_state" and "joint c" in str(err.value)
    asm.write_joint_state(20 * S, ["c"], np.array([3.0]))
    assert asm.snapshot(20 * S, S).state_stamp_ns == 20 * S


def test_nonfinite_joint_from_a_partial_message_blocks():
    asm = filled()
    asm.write_joint_state(10 * S, ["b"], np.array([np.nan]))
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S)
    assert err.value.reason == "nonfinite_state" and "b" in str(err.value)


def test_joint_layouts_cached_and_state_buffer_reused():
    asm = cams_only()
    arm, grip = ["a", "b", "extra"], ["c"]
    ptr = asm._joint_values.__array_interface__["data"][0]
    layouts = set()
    for k in range(6):  # two drivers interleaving on one topic
        asm.write_joint_state(10 * S + k, arm, np.array([1.0, 2.0, 0.0]))
        asm.write_joint_state(10 * S + k, grip, np.array([3.0]))
        layouts.add(id(asm._joints.layout(arm)))
        layouts.add(id(asm._joints.layout(grip)))
    assert len(layouts) == 2, "a name list seen before must reuse its layout"
    assert asm._joint_values.__array_interface__["data"][0] == ptr


def test_state_source_none_feeds_zeros():
    asm = ObservationAssembler(1, NAMES, state_source="none")
    asm.write_raw(0, 10 * S, "rgb8", H, W, W * 3, img(1))
    obs = asm.snapshot(10 * S, S)
    np.testing.assert_array_equal(obs.state, np.zeros(3, np.float32))
