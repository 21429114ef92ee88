"""The node's input side on a bag's clock: tick times, what each tick sees, the camera
trigger, malformed messages, and the seed rules the node and the replays share."""
from __future__ import annotations

import numpy as np
import pytest

from flash_rt_ros.bag.observations import OfflineNode
from flash_rt_ros.bag.reader import BagReader
from flash_rt_ros.bag.types import typestore
from flash_rt_ros.bag.writer import BagWriter
from flash_rt_ros.chunks import ChunkMaker, stamp_seed
from flash_rt_ros.params import NodeParams

MS, S = 1_000_000, 1_000_000_000
T0 = 1_700_000_000 * S
H, W = 6, 8


def _header(stamp):
    t = typestore().types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp // S, nanosec=stamp % S), frame_id="")


def _image(stamp, value, height=H):
    t = typestore().types
    data = np.full(height * W * 3, value, np.uint8)
    return t["sensor_msgs/msg/Image"](header=_header(stamp), height=H, width=W, encoding="rgb8",
                                      is_bigendian=0, step=W * 3, data=data)


def _joints(stamp, value):
    t = typestore().types
    return t["sensor_msgs/msg/JointState"](header=_header(stamp), name=["a", "b"],
                                           position=np.array([value, -value]),
                                           velocity=np.zeros(0), effort=np.zeros(0))


def _bag(path, messages):
    """messages: (log time offset ms, topic, msg)."""
    with BagWriter(path) as w:
        for log_ms, topic, msg in sorted(messages, key=lambda m: m[0]):
            w.write(topic, T0 + log_ms * MS, msg)
    return path


def _params(**kw):
    base = dict(camera_topics=("/c0", "/c1"), joint_names=("a", "b"), rate_hz=10.0,
                max_observation_age_s=0.25)
    base.update(kw)
    return NodeParams(**base)


def _run(path, p):
    node = OfflineNode(p)
    with BagReader(path) as r:
        got = [(t - T0, [s - T0 for s in obs.image_stamps_ns], obs.state_stamp_ns - T0,
                [int(i[0, 0, 0]) for i in obs.images], obs.state.tolist())
               for t, obs in node.observations(r)]
    return got, node.counters.snapshot()


def _stream(cam_ms=(13, 47, 81, 115, 149, 183, 217), joint_ms=(5, 55, 105, 155, 205)):
    """Camera frames (value = index) logged 2 ms after capture, joints 1 ms after."""
    msgs = []
    for k, c in enumerate(cam_ms):
        for cam, topic in enumerate(("/c0", "/c1")):
            msgs.append((c + 2 + cam, topic, _image(T0 + (c + cam) * MS, 10 * cam + k)))
    for k, j in enumerate(joint_ms):
        msgs.append((j + 1, "/js", _joints(T0 + j * MS, float(k))))
    return msgs


def test_timer_ticks_at_period_multiples_and_see_only_earlier_messages(tmp_path):
    got, counters = _run(_bag(tmp_path / "b", _stream()), _params(joint_state_topics=("/js",)))
    # Ticks at 100 and 200 ms (multiples of the period from the first message at 6 ms).
    assert [g[0] for g in got] == [100 * MS, 200 * MS]
    t, cams, state_stamp, values, state = got[0]
    assert cams == [81 * MS, 82 * MS] and values == [2, 12]  # frames logged before 100 ms
    assert state_stamp == 55 * MS and state == [1.0, -1.0]
    assert got[1][1] == [183 * MS, 184 * MS] and got[1][3] == [5, 15]
    assert counters == {"ticks": 2}


def test_stale_input_blocks_the_tick_as_in_the_node(tmp_path):
    got, counters = _run(_bag(tmp_path / "b", _stream(joint_ms=(5,))),
                         _params(joint_state_topics=("/js",), max_observation_age_s=0.15))
    assert [g[0] for g in got] == [100 * MS]  # at 200 ms the joint state is 195 ms old
    assert counters == {"ticks": 2, "skipped/stale_state": 1}


def test_camera_trigger_ticks_on_last_camera_frames_rate_limited(tmp_path):
    got, counters = _run(_bag(tmp_path / "b", _stream()),
                         _params(joint_state_topics=("/js",), trigger="camera", rate_hz=20.0))
    # Camera 1's frames are logged at 16, 50, 84, ... ms, 34 ms apart: under the rate
    # limit (0.9 x 50 ms), so every second one ticks.
    assert [g[0] // MS for g in got] == [16, 84, 152, 220]
    assert all(g[1][1] == g[0] - 2 * MS for g in got), "the triggering frame is in the obs"


def test_receipt_stamps_are_log_times(tmp_path):
    got, _ = _run(_bag(tmp_path / "b", _stream()),
                  _params(joint_state_topics=("/js",), stamp_source="receipt"))
    assert got[0][1] == [83 * MS, 84 * MS] and got[0][2] == 56 * MS


def test_malformed_frame_is_counted_and_dropped(tmp_path):
    msgs = _stream()
    msgs.append((150, "/c0", _image(T0 + 148 * MS, 99, height=H - 2)))  # truncated payload
    got, counters = _run(_bag(tmp_path / "b", msgs), _params(joint_state_topics=("/js",)))
    assert counters["malformed/camera0/truncated"] == 1
    assert 99 not in got[1][3] and got[1][3] == [5, 15]


def test_seed_rules():
    class Echo:
        def predict(self, images, state, prompt, seed):
            class R:
                actions = np.full((3, 2), seed % 1000, np.float32)
                latency_ms = 1.0
            return R

    class Obs:
        images, image_stamps_ns, state, state_stamp_ns = [None], [5], np.zeros(2), 5
        stamp_ns = 5

        @staticmethod
        def wait_ready():
            pass

    seq = ChunkMaker(Echo(), _params(seed=10), 2, "cpu", "id")
    assert [seq.make(Obs, "x").seed for _ in range(3)] == [10, 11, 12]
    by_stamp = ChunkMaker(Echo(), _params(seed=10, seed_mode="stamp"), 2, "cpu", "id")
    seeds = {by_stamp.make(Obs, "x").seed for _ in range(3)}
    assert seeds == {stamp_seed(10, 5)} and stamp_seed(10, 5) != stamp_seed(10, 6)
    assert stamp_seed(10, 5) != stamp_seed(11, 5) and 0 <= stamp_seed(2**62, 2**62) < 2**63
    with pytest.raises(ValueError, match=r"shape \(3, 2\), expected \(horizon, 3\)"):
        ChunkMaker(Echo(), _params(joint_names=("a", "b", "c")), 2, "cpu", "id").make(Obs, "x")
