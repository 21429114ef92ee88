"""Observation assembly: camera frames and joint states into preallocated slots.

Independent of rclpy (stamps are integer nanoseconds, messages are plain fields) so the
live node and the rosbag replay tools assemble observations with the same code.

Each input owns a ring of three slots: the one the policy is reading (held from
``snapshot`` until ``release``), the newest complete one, and one being written. A
writer therefore never touches the slot being read (no tearing while inference runs)
and never has to wait or drop because the reader is slow; ``snapshot`` always gets the
newest complete frame. The slot memory is allocated once per input (on the first frame,
when the size becomes known); after that no message allocates a buffer.

Joint states merge by name: each configured joint keeps its latest value and its own
stamp in one preallocated (pinned) vector, so the arm and the gripper may arrive in
separate messages. The state's stamp is the oldest joint stamp: the stalest joint decides
whether the state is fresh enough. These writes are a few floats and happen under the
lock, so several joint-state topics may write concurrently.

Thread model: at most one writer per camera at a time (the node gives every camera
subscription its own mutually exclusive callback group) and one reader (the inference tick). A single
short lock covers only the slot bookkeeping, never a pixel copy.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from flash_rt_ros.buffers import host_buffer
from flash_rt_ros.encodings import (MalformedFrame, bgr_into, decode_compressed, decode_raw,
                                    frame_shape)
from flash_rt_ros.joints import JointLayouts
from flash_rt_ros.params import STATE_SOURCES


class NotReady(Exception):
    """Why no observation can be used now; ``reason`` is a stable counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class _Ring:
    """Three slots of one input plus the index bookkeeping (guarded by the owner's lock)."""

    __slots__ = ("slots", "stamps", "latest", "reading", "writing")

    def __init__(self):
        self.slots: list[np.ndarray] | None = None
        self.stamps = [0, 0, 0]
        self.latest = -1  # newest complete slot, -1 = nothing yet
        self.reading = -1  # slot held by the current snapshot
        self.writing = -1

    def ensure(self, shape, dtype) -> None:
        if self.slots is None:
            self.slots = [host_buffer(shape, dtype) for _ in range(3)]

    def free_slot(self) -> int:
        for i in range(3):
            if i != self.latest and i != self.reading:
                return i
        raise AssertionError("unreachable: three slots, two taken at most")


@dataclass
class Observation:
    """One assembled observation; the arrays are views of held slots until ``release``."""

    images: list  # per camera: uint8 HxWx3 RGB array (a view of the held slot)
    image_stamps_ns: list  # per camera
    state: np.ndarray  # float32 copy (tiny), safe to keep
    state_stamp_ns: int  # oldest stamp among the configured joints (0 for state_source none)
    stamp_ns: int  # newest input stamp: the observation time
    _held: list = field(default_factory=list, repr=False)


class ObservationAssembler:
    """Assemble ``num_cameras`` frames plus the named joints into one observation."""

    def __init__(self, num_cameras: int, joint_names, state_source: str = "position"):
        if state_source not in STATE_SOURCES:
            raise ValueError(f"state_source must be one of {STATE_SOURCES}, got {state_source!r}")
        if num_cameras < 1:
            raise ValueError("at least one camera is needed")
        self.num_cameras = num_cameras
        self.joint_names = list(joint_names)
        self.state_source = state_source
        self._lock = threading.Lock()
        self._cams = [_Ring() for _ in range(num_cameras)]
        self._joints = JointLayouts(self.joint_names)
        self._joint_values = host_buffer((len(self.joint_names),), np.float32)
        self._joint_stamps = np.zeros(len(self.joint_names), dtype=np.int64)  # 0 = never seen
        self.frames_written = [0] * num_cameras
        self.frames_used = [0] * num_cameras

    # ---------------------------------------------------------------- writers
    def _begin(self, ring: _Ring) -> np.ndarray:
        with self._lock:
            ring.writing = ring.free_slot()
            return ring.slots[ring.writing]

    def _commit(self, ring: _Ring, stamp_ns: int) -> None:
        with self._lock:
            ring.stamps[ring.writing] = stamp_ns
            ring.latest, ring.writing = ring.writing, -1

    def _abort(self, ring: _Ring) -> None:
        with self._lock:
            ring.writing = -1

    def _fill(self, cam: int, ring: _Ring, stamp_ns: int, decode_into) -> None:
        """Decode into the ring's free slot; publish it as the newest frame only on success,
        so a frame that fails half-way never replaces a good one."""
        dst = self._begin(ring)
        try:
            decode_into(dst)
        except BaseException:
            self._abort(ring)
            raise
        self._commit(ring, stamp_ns)
        self.frames_written[cam] += 1

    def _check_cam(self, cam: int, stamp_ns: int) -> _Ring:
        if not 0 <= cam < self.num_cameras:
            raise IndexError(f"camera index {cam} out of range")
        if stamp_ns <= 0:
            raise MalformedFrame("zero_stamp", "header.stamp is not set")
        return self._cams[cam]

    def write_raw(self, cam: int, stamp_ns: int, encoding: str, height: int, width: int,
                  step: int, data) -> None:
        """Decode a ``sensor_msgs/Image`` payload into camera ``cam``'s free slot."""
        ring = self._check_cam(cam, stamp_ns)
        ring.ensure(frame_shape(encoding, height, width), np.uint8)
        self._fill(cam, ring, stamp_ns,
                   lambda dst: decode_raw(encoding, height, width, step, data, dst))

    def write_compressed(self, cam: int, stamp_ns: int, fmt: str, data) -> None:
        """Decode a ``sensor_msgs/CompressedImage`` (JPEG/PNG) into camera ``cam``'s slot."""
        ring = self._check_cam(cam, stamp_ns)
        bgr = decode_compressed(fmt, data)
        ring.ensure(bgr.shape, np.uint8)
        self._fill(cam, ring, stamp_ns, lambda dst: bgr_into(bgr, dst))

    def write_joint_state(self, stamp_ns: int, names, position=(), velocity=(), effort=()) -> None:
        """Merge the configured joints a JointState carries; each keeps its own stamp.

        A message may carry any subset (an arm driver and a gripper driver publishing
        separately); joints not in ``joint_names`` are ignored.
        """
        if self.state_source == "none":
            return
        if stamp_ns <= 0:
            raise MalformedFrame("zero_stamp", "header.stamp is not set")
        values = {"position": position, "velocity": velocity, "effort": effort}[self.state_source]
        src = np.asarray(values, dtype=np.float64)  # rclpy's array('d'): no copy
        if src.size != len(names):
            raise MalformedFrame("size_mismatch",
                                 f"{len(names)} names but {src.size} {self.state_source} values")
        with self._lock:  # a few floats: short, and makes writers on several topics safe
            layout = self._joints.layout(names)
            np.take(src, layout.src, out=layout.gather)
            self._joint_values[layout.dst] = layout.gather
            self._joint_stamps[layout.dst] = stamp_ns

    # ---------------------------------------------------------------- reader
    def snapshot(self, now_ns: int, max_age_ns: int) -> Observation:
        """Hold the newest complete inputs, or raise :class:`NotReady` (nothing held then).

        Refuses a missing camera or state, any input older than ``max_age_ns`` relative
        to ``now_ns``, and a state with NaN/inf values.
        """
        with self._lock:
            if any(r.reading >= 0 for r in self._cams):
                raise NotReady("busy", "previous snapshot not released")
            for i, ring in enumerate(self._cams):
                if ring.latest < 0:
                    raise NotReady("missing_camera", f"camera {i} has not delivered a frame")
            cam_stamps = [r.stamps[r.latest] for r in self._cams]
            for i, s in enumerate(cam_stamps):
                if now_ns - s > max_age_ns:
                    raise NotReady("stale_camera", f"camera {i} is {(now_ns - s) / 1e6:.0f} ms old")
            state_stamp = self._check_state(now_ns, max_age_ns)
            state = self._joint_values.copy()
            if not np.isfinite(state).all():
                bad = [n for n, v in zip(self.joint_names, state) if not np.isfinite(v)]
                raise NotReady("nonfinite_state", f"NaN/inf in {', '.join(bad)}")
            held = []
            for ring in self._cams:
                ring.reading = ring.latest
                held.append(ring)
            images = [r.slots[r.reading] for r in self._cams]
        for i in range(self.num_cameras):
            self.frames_used[i] += 1
        stamps = cam_stamps + ([state_stamp] if state_stamp else [])
        return Observation(images=images, image_stamps_ns=cam_stamps, state=state,
                           state_stamp_ns=state_stamp, stamp_ns=max(stamps), _held=held)

    def _check_state(self, now_ns: int, max_age_ns: int) -> int:
        """The state's stamp (its stalest joint), or NotReady (caller holds the lock)."""
        if self.state_source == "none":  # a policy without proprioception: a fixed zero state
            return 0
        stamps = self._joint_stamps
        if not stamps.all():
            missing = [n for n, s in zip(self.joint_names, stamps) if s == 0]
            raise NotReady("missing_state", f"no value yet for joint(s) {', '.join(missing)}")
        oldest = int(stamps.min())
        if now_ns - oldest > max_age_ns:
            stalest = self.joint_names[int(stamps.argmin())]
            raise NotReady("stale_state",
                           f"joint {stalest} is {(now_ns - oldest) / 1e6:.0f} ms old")
        return oldest

    def release(self, obs: Observation) -> None:
        """Give the held slots back to the writers (call after predict returned)."""
        with self._lock:
            for ring in obs._held:
                ring.reading = -1
            obs._held = []
