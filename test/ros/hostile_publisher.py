"""Hostile inputs for the node's safety tests (tests only).

Publishes good camera frames and joint states at a steady rate and, on a plan, hostile
messages in their place or beside them: malformed or oversized frames, decompression
bombs, inputs stamped in the future, the past or not at all, bursts, NaN and huge joints,
megabyte prompts.

    python test/ros/hostile_publisher.py PLAN.json

PLAN (JSON): ``cameras`` [{topic, encoding: rgb8|jpeg|png}], ``width``, ``height``,
``rate`` (Hz), ``duration`` (s of plan time, counted from when every topic has a
subscriber: step k is at k / rate, paced by the wall clock, so a publisher that falls
behind sends every step late but skips none), ``joint_topic``, ``joints`` [names],
``prompt_topic``, ``events`` [{t, kind, camera, duration, count}] (during [t, t + duration)
each step sends ``count`` messages of ``kind``; a hostile frame replaces the camera's good
frame of that step), ``silence`` [{camera, from, to}] (no good frames from that camera in
that window), ``after_chunk`` (optional: an ActionChunk topic; the plan's clock for events,
silences and ``duration`` then starts when the first chunk arrives there, good frames
flowing until then, so no hostile input meets a node that is still discovering its
publishers; ``chunk_wait_s``, default 60, bounds that wait). When done it prints
``hostile: sent {...} last at <ns>``: messages per kind, and the node clock when the last
hostile message went out.
"""
from __future__ import annotations

import functools
import itertools
import json
import struct
import sys
import time
import zlib
from collections import Counter

import numpy as np

S = 1_000_000_000
# Hostile kinds by the input they target: raw cameras, compressed cameras, either, joints,
# the prompt topic.
KINDS = {
    "raw": ["truncated", "unknown_encoding", "zero_size", "huge_size", "odd_yuv", "bad_step"],
    "compressed": ["png_bomb", "jpeg_bomb", "garbage"],
    "camera": ["size_641", "future_60s", "future_1h", "past_1h", "zero_stamp", "burst"],
    "joints": ["nan_joints", "inf_joints", "huge_joints", "joint_size_mismatch", "dup_joints",
               "future_joints"],
    "prompt": ["long_prompt"],
}
BOMB_SIDE = 10_000  # 1e8 pixels: 300 MB once decoded as BGR, ~100 KB compressed
PROMPT_BYTES = 1 << 20


@functools.cache
def png_bomb() -> bytes:
    """A valid gray PNG of BOMB_SIDE x BOMB_SIDE zeros (decodes fully, if anyone lets it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body)))
    comp = zlib.compressobj(9)
    row = b"\0" * (BOMB_SIDE + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(BOMB_SIDE)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) +
            chunk(b"IEND", b""))


@functools.cache
def jpeg_bomb() -> bytes:
    """A small real JPEG whose frame header claims BOMB_SIDE x BOMB_SIDE."""
    import cv2
    ok, buf = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    data = bytearray(buf.tobytes())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


def _time(ns: int):
    from builtin_interfaces.msg import Time
    return Time(sec=ns // S, nanosec=ns % S)


class Plan:
    """Builds the good and the hostile messages of one run."""

    def __init__(self, plan: dict):
        from flash_rt_ros.synthetic import encode, frame
        self.p, self.encode, self.frame = plan, encode, frame
        self.w, self.h = plan["width"], plan["height"]

    def camera(self, cam: int, now_ns: int, stamp_ns: int | None = None, w=None, h=None):
        """Camera ``cam``'s good frame at ``now_ns`` (optionally re-stamped or re-sized)."""
        from sensor_msgs.msg import CompressedImage, Image
        w, h = w or self.w, h or self.h
        enc = self.p["cameras"][cam]["encoding"]
        fmt, data, step = self.encode(self.frame(cam, now_ns, h, w), enc)
        if enc in ("jpeg", "png"):
            msg = CompressedImage(format=fmt, data=data)
        else:
            msg = Image(height=h, width=w, encoding=fmt, step=step, data=data)
        msg.header.stamp = _time(now_ns if stamp_ns is None else stamp_ns)
        return msg

    def joints(self, now_ns: int, values=None, names=None, stamp_ns=None):
        from sensor_msgs.msg import JointState
        from flash_rt_ros.synthetic import joints
        names = list(self.p["joints"] if names is None else names)
        pos = joints(now_ns, len(names)).tolist() if values is None else list(values)
        msg = JointState(name=names, position=pos)
        msg.header.stamp = _time(now_ns if stamp_ns is None else stamp_ns)
        return msg

    def hostile(self, kind: str, cam: int, now_ns: int):
        """(what, message): ``what`` is "camera", "joints" or "prompt"."""
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String
        n = len(self.p["joints"])

        def raw(**fields):
            msg = Image(height=self.h, width=self.w, encoding="rgb8", step=self.w * 3,
                        data=bytes(self.w * 3 * self.h))
            for k, v in fields.items():
                setattr(msg, k, v)
            msg.header.stamp = _time(now_ns)
            return msg

        def compressed(data: bytes, fmt: str = "png"):
            msg = CompressedImage(format=fmt, data=data)
            msg.header.stamp = _time(now_ns)
            return msg

        w = self.w | 1  # odd
        camera = {
            "truncated": lambda: raw(data=bytes(self.w * self.h)),
            "unknown_encoding": lambda: raw(encoding="x" * 100_000),
            "zero_size": lambda: raw(width=0, height=0, step=0, data=b""),
            "huge_size": lambda: raw(width=65535, height=65535, step=65535 * 3),
            "odd_yuv": lambda: raw(encoding="yuv422", width=w, step=w * 2,
                                   data=bytes(w * 2 * self.h)),
            "bad_step": lambda: raw(step=1),
            "size_641": lambda: self.camera(cam, now_ns, w=self.w + 1, h=self.h - 1),
            "png_bomb": lambda: compressed(png_bomb()),
            "jpeg_bomb": lambda: compressed(jpeg_bomb(), "jpeg"),
            "garbage": lambda: compressed(b"\xff\xd8" + bytes(np.random.default_rng(
                now_ns % 2**32).integers(0, 256, 5000, dtype=np.uint8)), "jpeg"),
            "future_60s": lambda: self.camera(cam, now_ns, now_ns + 60 * S),
            "future_1h": lambda: self.camera(cam, now_ns, now_ns + 3600 * S),
            "past_1h": lambda: self.camera(cam, now_ns, now_ns - 3600 * S),
            "zero_stamp": lambda: self.camera(cam, now_ns, 0),
            "burst": lambda: self.camera(cam, now_ns),
        }
        joints = {
            "nan_joints": lambda: self.joints(now_ns, [float("nan")] * n),
            "inf_joints": lambda: self.joints(now_ns, [float("inf")] + [0.0] * (n - 1)),
            "huge_joints": lambda: self.joints(now_ns, [1e30] * n),
            "joint_size_mismatch": lambda: self.joints(now_ns, [0.0] * (n - 1)),
            "dup_joints": lambda: self.joints(now_ns, [0.0] * (n + 1),
                                              self.p["joints"] + self.p["joints"][:1]),
            "future_joints": lambda: self.joints(now_ns, stamp_ns=now_ns + 60 * S),
        }
        if kind in camera:
            return "camera", camera[kind]()
        if kind in joints:
            return "joints", joints[kind]()
        if kind == "long_prompt":
            return "prompt", String(data="p" * PROMPT_BYTES)
        raise ValueError(f"unknown hostile kind {kind!r}")


def main(path: str) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import String

    from flash_rt_ros.shutdown import is_normal_stop

    with open(path) as fh:
        spec = json.load(fh)
    plan = Plan(spec)
    # The bombs take ~0.5 s to build: built now, a first use does not hold the plan's
    # steps back (they would then go out back to back, shortening every event's window).
    kinds = {ev["kind"] for ev in spec["events"]}
    for kind, build in (("png_bomb", png_bomb), ("jpeg_bomb", jpeg_bomb)):
        if kind in kinds:
            build()
    rclpy.init()
    node = rclpy.create_node("hostile_publisher")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    # A raw kind must target a raw camera and a compressed kind a compressed one (KINDS).
    cams = [node.create_publisher(CompressedImage if c["encoding"] in ("jpeg", "png") else Image,
                                  c["topic"], qos) for c in spec["cameras"]]
    jpub = node.create_publisher(JointState, spec["joint_topic"], qos)
    ppub = node.create_publisher(String, spec["prompt_topic"], qos)
    others = {"joints": jpub, "prompt": ppub}
    sent: Counter = Counter()
    last_hostile_ns = 0
    silence = spec.get("silence", [])
    period = 1.0 / spec["rate"]
    first_chunk = []  # the step at which the first chunk arrived (after_chunk)
    if spec.get("after_chunk"):
        from flash_rt_ros_msgs.msg import ActionChunk
        node.create_subscription(ActionChunk, spec["after_chunk"],
                                 lambda _: first_chunk or first_chunk.append(None), 10)
    try:
        deadline = time.monotonic() + 60
        while any(p.get_subscription_count() == 0 for p in cams + [jpub, ppub]):
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not subscribe within 60 s")
            time.sleep(0.1)
        time.sleep(0.5)
        start = time.monotonic()
        # The plan runs on step time (step k is at k * period), paced by the wall clock: a
        # publisher that falls behind sends every step late, never skips an event.
        t0 = 0.0 if not spec.get("after_chunk") else None  # when the plan's clock starts
        for step in itertools.count():
            if t0 is None:
                rclpy.spin_once(node, timeout_sec=0.0)
                if first_chunk:
                    t0 = step * period
                elif step * period > spec.get("chunk_wait_s", 60.0):
                    raise RuntimeError(f"no chunk on {spec['after_chunk']} after "
                                       f"{step * period:.0f} s of good inputs")
            elapsed = step * period - (t0 if t0 is not None else 0.0)
            if t0 is not None and elapsed >= spec["duration"] or not rclpy.ok():
                break
            time.sleep(max(0.0, start + step * period - time.monotonic()))
            now = node.get_clock().now().nanoseconds
            active = [ev for ev in spec["events"] if t0 is not None
                      and ev["t"] <= elapsed < ev["t"] + ev.get("duration", period)]
            hostile = [(ev, *plan.hostile(ev["kind"], ev.get("camera", 0), now))
                       for ev in active for _ in range(ev.get("count", 1))]
            # A camera with a hostile frame in this step sends that instead of its good one
            # (the node queues one frame per camera: a good frame right behind would replace
            # it before the node could take it).
            replaced = {ev.get("camera", 0) for ev, what, _ in hostile if what == "camera"}
            for i, pub in enumerate(cams):
                quiet = t0 is not None and any(q["camera"] == i and q["from"] <= elapsed < q["to"]
                                               for q in silence)
                if not quiet and i not in replaced:
                    pub.publish(plan.camera(i, now))
            jpub.publish(plan.joints(now))
            for ev, what, msg in hostile:
                (cams[ev.get("camera", 0)] if what == "camera" else others[what]).publish(msg)
                sent[ev["kind"]] += 1
                last_hostile_ns = now
    except BaseException as exc:
        if not is_normal_stop(exc):
            raise
    finally:
        print(f"hostile: sent {json.dumps(dict(sent))} last at {last_hostile_ns}", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
