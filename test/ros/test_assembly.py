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


# ------------------------------------------------------------ sizing, freshness, ranges
from flash_rt_ros.assembly import RESIZE_AFTER_FRAMES  # noqa: E402


def good(asm, k, cam=0):
    asm.write_raw(cam, 20 * S + k, "rgb8", H, W, W * 3, img(k % 200))


@pytest.mark.parametrize("first", [
    lambda a: a.write_raw(0, 20 * S, "rgb8", H, W, W * 3, img(9)[:50]),  # truncated
    lambda a: a.write_raw(0, 20 * S, "yuv422", H, W + 1, (W + 1) * 2, b"\0" * 9999),  # odd
    lambda a: a.write_raw(0, 20 * S, "rgb8", 9999, 9999, 9999 * 3, b""),  # too many pixels
    lambda a: a.write_raw(0, 20 * S, "32FC1", H, W, W * 4, b"\0" * (W * 4 * H)),
], ids=["truncated", "odd_width_yuv422", "too_large", "unknown_encoding"])
def test_malformed_first_frame_allocates_nothing(first):
    asm = ObservationAssembler(1, NAMES, state_source="none", max_pixels=H * W * 4)
    with pytest.raises(MalformedFrame):
        first(asm)
    good(asm, 1)  # the first good frame is used at once
    assert asm.snapshot(20 * S + 1, S).images[0].shape == (H, W, 3)


def test_odd_sized_first_frame_is_followed_by_the_real_size():
    """A valid first frame of another size (641x479) fixes nothing for good: after
    RESIZE_AFTER_FRAMES frames of the camera's real size the slots follow it."""
    asm = ObservationAssembler(1, NAMES, state_source="none")
    asm.write_raw(0, 20 * S, "rgb8", H + 1, W + 1, (W + 1) * 3, b"\0" * ((W + 1) * 3 * (H + 1)))
    for k in range(1, RESIZE_AFTER_FRAMES):
        with pytest.raises(MalformedFrame, match="size_mismatch"):
            good(asm, k)
    good(asm, RESIZE_AFTER_FRAMES)
    obs = asm.snapshot(20 * S + RESIZE_AFTER_FRAMES, S)
    assert obs.images[0].shape == (H, W, 3) and int(obs.images[0][0, 0, 0]) == RESIZE_AFTER_FRAMES


def test_stray_sizes_never_reallocate_and_held_slot_survives_a_resize():
    asm = ObservationAssembler(1, NAMES, state_source="none")
    good(asm, 1)
    held = asm.snapshot(20 * S + 1, S)
    ptrs = {id(s) for s in asm._cams[0].slots}
    odd = (H + 1, W + 1, (W + 1) * 3, b"\0" * ((W + 1) * 3 * (H + 1)))
    for k in range(2, 8):  # a stray size alternating with the real one
        if k % 2:
            good(asm, k)
        else:
            with pytest.raises(MalformedFrame, match="size_mismatch"):
                asm.write_raw(0, 20 * S + k, "rgb8", *odd)
    assert {id(s) for s in asm._cams[0].slots} == ptrs, "a stray size reallocated the slots"
    for k in range(RESIZE_AFTER_FRAMES - 1):  # a real change, while a snapshot is held
        with pytest.raises(MalformedFrame, match="size_mismatch"):
            asm.write_raw(0, 20 * S + 8 + k, "rgb8", *odd)
    asm.write_raw(0, 20 * S + 19, "rgb8", *odd)  # the last of them: the camera follows
    assert int(held.images[0][0, 0, 0]) == 1, "the held frame changed under the reader"
    asm.release(held)
    assert asm.snapshot(20 * S + 20, S).images[0].shape == (H + 1, W + 1, 3)


def test_future_stamps_refused_at_the_tick():
    asm = filled(t=10 * S)
    lead = S // 20
    with pytest.raises(NotReady) as err:  # the clock went back by more than the tolerance
        asm.snapshot(10 * S - lead - 1, S, max_lead_ns=lead)
    assert err.value.reason == "future_camera" and err.value.source == "camera0"
    asm.snapshot(10 * S - lead, S, max_lead_ns=lead)  # within the tolerance


def test_future_joint_stamp_refused_at_the_tick():
    asm = cams_only(t=10 * S)
    asm.write_joint_state(10 * S, NAMES, np.zeros(3))
    asm.write_joint_state(12 * S, ["b"], np.zeros(1))
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S, max_lead_ns=S // 20)
    assert err.value.reason == "future_state" and "joint b" in str(err.value)


@pytest.mark.parametrize("value", [1e30, -1e30, 1e6 + 1])
def test_joint_values_beyond_the_bound_block(value):
    asm = filled()
    asm.write_joint_state(10 * S, ["c"], np.array([value]))
    with pytest.raises(NotReady) as err:
        asm.snapshot(10 * S, S)
    assert err.value.reason == "state_out_of_range" and "c=" in str(err.value)


def test_joint_bound_is_configurable():
    asm = ObservationAssembler(1, NAMES, max_abs_joint=3.5)
    asm.write_raw(0, 10 * S, "rgb8", H, W, W * 3, img(1))
    asm.write_joint_state(10 * S, NAMES, np.array([1.0, -3.5, 3.0]))
    asm.release(asm.snapshot(10 * S, S))
    asm.write_joint_state(10 * S, ["a"], np.array([3.6]))
    with pytest.raises(NotReady, match="state_out_of_range: a=3.6"):
        asm.snapshot(10 * S, S)


def test_oldest_stamp_is_the_stalest_input():
    asm = cams_only(t=10 * S)
    asm.write_joint_state(9 * S, NAMES, np.zeros(3))
    obs = asm.snapshot(10 * S, 2 * S)
    assert obs.oldest_stamp_ns == 9 * S and obs.stamp_ns == 10 * S
