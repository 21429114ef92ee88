"""Observation assembly: camera frames and joint states into preallocated slots.

Independent of rclpy (stamps are integer nanoseconds, messages are plain fields) so the
live node and the rosbag replay tools assemble observations with the same code.

Each input owns a ring of three slots: the one the policy is reading (held from
``snapshot`` until ``release``), the newest complete one, and one being written. A
writer therefore never touches the slot being read (no tearing while inference runs)
and never has to wait or drop because the reader is slow; ``snapshot`` always gets the
newest complete frame. The slot memory is allocated once per camera, on its first frame
that passed every check (a frame is validated completely, its size included, before any
slot exists for it), so a malformed first frame cannot fix a wrong size. A camera whose
size really changes is followed after RESIZE_AFTER_FRAMES consecutive valid frames of the
new size; a stray frame of another size is refused (``size_mismatch``) and changes nothing.
Apart from those two events no message allocates a buffer.

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

import functools
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from flash_rt_ros.buffers import host_buffer
from flash_rt_ros.encodings import (MalformedFrame, bgr_into, check_compressed, decode_bgr,
                                    raw_frame)
from flash_rt_ros.jpeg import JpegDecoder, OpenCvJpeg, make_jpeg_decoder
from flash_rt_ros.joints import JointLayouts
from flash_rt_ros.params import DEFAULTS, STATE_SOURCES, NodeParams

# Consecutive valid frames of a new size after which a camera's slots follow it: a real
# resolution change costs this many frames, a single odd frame (or an alternating pair of
# sizes) never reallocates.
RESIZE_AFTER_FRAMES = 3


class NotReady(Exception):
    """Why no observation can be used now; ``reason`` is a stable counter key and
    ``source`` the input at fault (``camera1``), when one is."""

    def __init__(self, reason: str, detail: str = "", source: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.source = reason, source


class _Ring:
    """Three slots of one camera, their size, and the index bookkeeping (the indices are
    guarded by the owner's lock; the size by the camera's single writer)."""

    __slots__ = ("slots", "shape", "stamps", "pending", "latest", "reading", "writing",
                 "_next_shape", "_next_count")

    def __init__(self):
        self.slots: list[np.ndarray] | None = None
        self.shape: tuple | None = None
        self.stamps = [0, 0, 0]
        # per slot, a GPU decode still landing in it (jpeg.PendingFrame) or None
        self.pending: list = [None, None, None]
        self.latest = -1  # newest complete slot, -1 = nothing yet
        self.reading = -1  # slot held by the current snapshot
        self.writing = -1
        self._next_shape, self._next_count = None, 0  # a size change in progress

    def new_slots_for(self, shape) -> list[np.ndarray] | None:
        """Slots to install for a valid frame of ``shape`` (None: the current ones fit);
        MalformedFrame while a different size has not yet persisted."""
        if shape == self.shape:
            self._next_shape, self._next_count = None, 0
            return None
        if self.shape is not None:
            if shape != self._next_shape:
                self._next_shape, self._next_count = shape, 0
            self._next_count += 1
            if self._next_count < RESIZE_AFTER_FRAMES:
                raise MalformedFrame("size_mismatch", f"got {shape[1]}x{shape[0]}, camera "
                                     f"is {self.shape[1]}x{self.shape[0]} (follows a new "
                                     f"size after {RESIZE_AFTER_FRAMES} frames of it)")
        self._next_shape, self._next_count = None, 0
        return [host_buffer(shape, np.uint8) for _ in range(3)]

    def install(self, slots: list[np.ndarray]) -> None:
        """New slots (caller holds the lock). A snapshot still holding an old slot keeps
        that array alive and untouched; the old frames are no longer "latest". Decodes still
        landing in the old slots are waited for first (their memory must outlive them)."""
        for p in self.pending:
            if p is not None:
                p.wait()
        self.slots, self.shape = slots, slots[0].shape
        self.pending = [None, None, None]
        self.latest = -1

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
    # node clock when the node had it: the triggering frame's arrival (trigger: camera) or
    # the timer tick; set by the node (0 elsewhere)
    received_ns: int = 0
    _held: list = field(default_factory=list, repr=False)
    # GPU decodes still landing in the held slots: wait_ready() before reading the images
    pending: list = field(default_factory=list, repr=False)

    def wait_ready(self) -> None:
        """Return once every held image is complete (a GPU JPEG decode may still be copying
        into its slot when the snapshot is taken: the camera callback does not wait for it)."""
        for p in self.pending:
            p.wait()
        self.pending = []

    @property
    def oldest_stamp_ns(self) -> int:
        """The stalest input's stamp: it decides whether the observation is fresh."""
        return min(self.image_stamps_ns + ([self.state_stamp_ns] if self.state_stamp_ns else []))


def age_problem(now_ns: int, stamp_ns: int, max_age_ns: int, max_lead_ns: int) -> str:
    """"stale" if ``stamp_ns`` is more than ``max_age_ns`` before ``now_ns``, "future" if it
    is more than ``max_lead_ns`` after it, else "" (the one freshness rule, applied at the
    tick and again right before publishing)."""
    if now_ns - stamp_ns > max_age_ns:
        return "stale"
    if stamp_ns - now_ns > max_lead_ns:
        return "future"
    return ""


# FLASH_RT_ROS_JPEG_ASYNC=1: GPU JPEG decodes land after the callback returns (an A/B knob;
# see ObservationAssembler's jpeg_async)
JPEG_ASYNC_ENV = "FLASH_RT_ROS_JPEG_ASYNC"
DEFAULT_LEAD_NS = int(DEFAULTS["future_stamp_tolerance_s"] * 1e9)


class ObservationAssembler:
    """Assemble ``num_cameras`` frames plus the named joints into one observation."""

    def __init__(self, num_cameras: int, joint_names, state_source: str = "position",
                 max_pixels: int = DEFAULTS["max_image_pixels"],
                 max_abs_joint: float = DEFAULTS["max_abs_joint_value"],
                 jpeg: JpegDecoder | None = None, jpeg_async: bool = False):
        if state_source not in STATE_SOURCES:
            raise ValueError(f"state_source must be one of {STATE_SOURCES}, got {state_source!r}")
        if num_cameras < 1:
            raise ValueError("at least one camera is needed")
        self.num_cameras = num_cameras
        self.joint_names = list(joint_names)
        self.state_source = state_source
        self.max_pixels, self.max_abs_joint = max_pixels, max_abs_joint
        self.jpeg = jpeg or OpenCvJpeg()
        # jpeg_async: the callback returns before a GPU decode's copy into the slot has
        # landed (the readers wait for it). Off: measured slower on the H100 (the node's own
        # work 2.02 vs 0.78-0.91 ms p50, docs/performance.md); JPEG_ASYNC_ENV turns it on.
        self.jpeg_async = jpeg_async
        self._lock = threading.Lock()
        self._cams = [_Ring() for _ in range(num_cameras)]
        self._joints = JointLayouts(self.joint_names)
        self._joint_values = host_buffer((len(self.joint_names),), np.float32)
        self._joint_stamps = np.zeros(len(self.joint_names), dtype=np.int64)  # 0 = never seen
        self.frames_written = [0] * num_cameras
        self.frames_used = [0] * num_cameras

    @classmethod
    def for_params(cls, p: NodeParams) -> "ObservationAssembler":
        """The assembler the node (and a replay of it) uses for parameters ``p``."""
        return cls(len(p.camera_topics), p.joint_names, p.state_source,
                   max_pixels=p.max_image_pixels, max_abs_joint=p.max_abs_joint_value,
                   jpeg=make_jpeg_decoder(p.jpeg_decoder),
                   jpeg_async=os.environ.get(JPEG_ASYNC_ENV, "0") == "1")

    # ---------------------------------------------------------------- writers
    def _begin(self, ring: _Ring, shape) -> np.ndarray:
        new_slots = ring.new_slots_for(shape)  # allocates outside the lock (pinned is slow)
        with self._lock:
            if new_slots is not None:
                ring.install(new_slots)
            ring.writing = ring.free_slot()
            landing, ring.pending[ring.writing] = ring.pending[ring.writing], None
            dst = ring.slots[ring.writing]
        if landing is not None:  # an older frame's GPU copy into this slot: let it finish
            landing.wait()
        return dst

    def _commit(self, ring: _Ring, stamp_ns: int, pending=None) -> None:
        with self._lock:
            ring.stamps[ring.writing] = stamp_ns
            ring.pending[ring.writing] = pending
            ring.latest, ring.writing = ring.writing, -1

    def _abort(self, ring: _Ring) -> None:
        with self._lock:
            ring.writing = -1

    def _fill(self, cam: int, ring: _Ring, shape, stamp_ns: int, decode_into) -> None:
        """Decode a validated frame of ``shape`` into the ring's free slot; publish it as the
        newest frame only on success, so a frame that fails half-way never replaces a good
        one. ``decode_into(dst)`` may return a jpeg.PendingFrame (a GPU copy still landing):
        it stays with the slot, and a snapshot holding the slot waits for it."""
        dst = self._begin(ring, shape)
        try:
            pending = decode_into(dst)
        except BaseException:
            self._abort(ring)
            raise
        self._commit(ring, stamp_ns, pending)
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
        frame = raw_frame(encoding, height, width, step, data, self.max_pixels)
        self._fill(cam, ring, frame.shape, stamp_ns, frame.into)

    def write_compressed(self, cam: int, stamp_ns: int, fmt: str, data) -> None:
        """Decode a ``sensor_msgs/CompressedImage`` (JPEG with ``self.jpeg``, PNG with
        OpenCV) into camera ``cam``'s slot; the slot's size comes from the header."""
        ring = self._check_cam(cam, stamp_ns)
        kind, buf, shape = check_compressed(fmt, data, self.max_pixels)
        if kind == "jpeg":
            decode = functools.partial(self.jpeg.decode_into_async if self.jpeg_async else
                                       self.jpeg.decode_into, buf)
        else:
            def decode(dst):
                bgr_into(decode_bgr(kind, buf, shape), dst)
        if shape != ring.shape:
            # a first frame or a new size: only a decodable one may count toward resizing
            # the ring (which drops the camera's frames of the old size)
            scratch = np.empty(shape, np.uint8)
            pending = decode(scratch)
            if pending is not None:
                pending.wait()  # copied on the CPU next
            decode = functools.partial(np.copyto, src=scratch)
        self._fill(cam, ring, shape, stamp_ns, decode)

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
    def snapshot(self, now_ns: int, max_age_ns: int,
                 max_lead_ns: int = DEFAULT_LEAD_NS) -> Observation:
        """Hold the newest complete inputs, or raise :class:`NotReady` (nothing held then).

        Refuses a missing camera or state, any input older than ``max_age_ns`` or stamped
        more than ``max_lead_ns`` after ``now_ns`` (the clock went back since it arrived),
        and a state with NaN/inf values or values beyond ``max_abs_joint``.
        """
        with self._lock:
            if any(r.reading >= 0 for r in self._cams):
                raise NotReady("busy", "previous snapshot not released")
            for i, ring in enumerate(self._cams):
                if ring.latest < 0:
                    raise NotReady("missing_camera", f"camera {i} has not delivered a frame",
                                   f"camera{i}")
            cam_stamps = [r.stamps[r.latest] for r in self._cams]
            for i, s in enumerate(cam_stamps):
                if problem := age_problem(now_ns, s, max_age_ns, max_lead_ns):
                    age_ms = (now_ns - s) / 1e6
                    what = (f"{age_ms:.0f} ms old" if problem == "stale"
                            else f"stamped {-age_ms:.0f} ms ahead of the clock")
                    raise NotReady(f"{problem}_camera", f"camera {i} frame is {what}",
                                   f"camera{i}")
            state_stamp = self._check_state(now_ns, max_age_ns, max_lead_ns)
            state = self._joint_values.copy()
            self._check_values(state)
            held = []
            for ring in self._cams:
                ring.reading = ring.latest
                held.append(ring)
            images = [r.slots[r.reading] for r in self._cams]
            pending = [r.pending[r.reading] for r in self._cams if r.pending[r.reading]]
        for i in range(self.num_cameras):
            self.frames_used[i] += 1
        stamps = cam_stamps + ([state_stamp] if state_stamp else [])
        return Observation(images=images, image_stamps_ns=cam_stamps, state=state,
                           state_stamp_ns=state_stamp, stamp_ns=max(stamps), _held=held,
                           pending=pending)

    def _check_state(self, now_ns: int, max_age_ns: int, max_lead_ns: int) -> int:
        """The state's stamp (its stalest joint), or NotReady (caller holds the lock)."""
        if self.state_source == "none":  # a policy without proprioception: a fixed zero state
            return 0
        stamps = self._joint_stamps
        if not stamps.all():
            missing = [n for n, s in zip(self.joint_names, stamps) if s == 0]
            raise NotReady("missing_state", f"no value yet for joint(s) {', '.join(missing)}")
        oldest, newest = int(stamps.min()), int(stamps.max())
        if age_problem(now_ns, oldest, max_age_ns, max_lead_ns) == "stale":
            stalest = self.joint_names[int(stamps.argmin())]
            raise NotReady("stale_state",
                           f"joint {stalest} is {(now_ns - oldest) / 1e6:.0f} ms old")
        if age_problem(now_ns, newest, max_age_ns, max_lead_ns) == "future":
            raise NotReady("future_state", f"joint {self.joint_names[int(stamps.argmax())]} "
                           f"is stamped {(newest - now_ns) / 1e6:.0f} ms ahead of the clock")
        return oldest

    def _check_values(self, state: np.ndarray) -> None:
        """NotReady unless every state value is finite and within ``max_abs_joint``."""
        if not np.isfinite(state).all():
            bad = [n for n, v in zip(self.joint_names, state) if not np.isfinite(v)]
            raise NotReady("nonfinite_state", f"NaN/inf in {', '.join(bad)}")
        if (np.abs(state) > self.max_abs_joint).any():
            bad = [f"{n}={v:g}" for n, v in zip(self.joint_names, state)
                   if abs(v) > self.max_abs_joint]
            raise NotReady("state_out_of_range", f"{', '.join(bad)} beyond "
                           f"max_abs_joint_value {self.max_abs_joint:g}")

    def release(self, obs: Observation) -> None:
        """Give the held slots back to the writers (call after predict returned)."""
        with self._lock:
            for ring in obs._held:
                ring.reading = -1
            obs._held = []
