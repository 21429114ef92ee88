"""Synthetic multi-camera + joint-state publisher (demo, benchmark, tests).

Frames and joint values are pure functions of (camera, stamp), so anyone holding an
ActionChunk's recorded stamps can regenerate the exact inputs the node consumed. Fault
injection flags (a camera going silent, NaN joints, malformed frames, bursts) let the
same tool check a deployment's safety behaviour.

    python -m flash_rt_ros.synthetic --cameras 3 --width 640 --height 480 --rate 30
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from flash_rt_ros.encodings import cv2

DEFAULT_JOINTS = [f"joint{i}" for i in range(8)]  # the tiny checkpoint has 8 state dims


_SHIFT = 256  # horizontal motion range in pixels
_BASES: dict = {}


def _base(cam: int, height: int, width: int) -> np.ndarray:
    """A per-camera textured panorama, built once; frames are windows into it."""
    key = (cam, height, width)
    if key not in _BASES:
        y = np.arange(height, dtype=np.int32)[:, None]
        x = np.arange(width + _SHIFT, dtype=np.int32)[None, :]
        img = np.empty((height, width + _SHIFT, 3), dtype=np.uint8)
        img[..., 0] = ((x + 40 * cam) % 256).astype(np.uint8)
        img[..., 1] = ((y * 2 + x // 3) % 256).astype(np.uint8)
        img[..., 2] = (((x ^ y) + 50 * cam) % 256).astype(np.uint8)
        _BASES[key] = img
    return _BASES[key]


def frame(cam: int, stamp_ns: int, height: int, width: int) -> np.ndarray:
    """A moving, textured RGB test image determined by (camera, stamp).

    A window sliding over a precomputed panorama: cheap enough (one copy) that the stamp
    a frame carries is within a fraction of a millisecond of its publication.
    """
    off = (stamp_ns // 7_000_000) % _SHIFT
    return np.ascontiguousarray(_base(cam, height, width)[:, off:off + width])


def joints(stamp_ns: int, n: int) -> np.ndarray:
    """Smooth joint positions (rad) determined by the stamp."""
    t = stamp_ns / 1e9
    return np.array([0.5 * np.sin(0.7 * t + 0.9 * j) for j in range(n)], dtype=np.float64)


def encode(rgb: np.ndarray, encoding: str) -> tuple[str, bytes, int]:
    """RGB to (encoding/format, payload, step) as a driver would publish it."""
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        return encoding, rgb.tobytes(), w * 3
    if encoding == "bgr8":
        return encoding, cv2().cvtColor(rgb, cv2().COLOR_RGB2BGR).tobytes(), w * 3
    if encoding == "mono8":
        return encoding, cv2().cvtColor(rgb, cv2().COLOR_RGB2GRAY).tobytes(), w
    if encoding in ("yuv422", "yuv422_yuy2"):  # BT.601 4:2:2, UYVY / YUYV byte order
        code = cv2().COLOR_RGB2YUV_UYVY if encoding == "yuv422" else cv2().COLOR_RGB2YUV_YUY2
        return encoding, cv2().cvtColor(rgb, code).tobytes(), w * 2
    if encoding in ("jpeg", "png"):
        ok, buf = cv2().imencode("." + ("jpg" if encoding == "jpeg" else "png"),
                               cv2().cvtColor(rgb, cv2().COLOR_RGB2BGR))
        assert ok
        return encoding, buf.tobytes(), 0
    raise ValueError(f"unsupported encoding {encoding!r}")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--topics", nargs="*", default=None,
                    help="camera topics (default cam{i}/image_raw, /compressed for jpeg/png; "
                         "relative names follow the namespace: --ros-args -r __ns:=/arm1)")
    ap.add_argument("--encodings", nargs="*", default=["rgb8"],
                    help="per camera (the last one repeats): rgb8 bgr8 mono8 yuv422 "
                         "yuv422_yuy2 jpeg png")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--rate", type=float, default=10.0, help="frames per second per camera")
    ap.add_argument("--joint-topic", default="joint_states")
    ap.add_argument("--joints", nargs="*", default=DEFAULT_JOINTS)
    ap.add_argument("--gripper-joints", type=int, default=0,
                    help="publish the last N joints as their own JointState (a gripper driver)")
    ap.add_argument("--gripper-topic", default="gripper/joint_states",
                    help="topic of the gripper JointState (may equal --joint-topic)")
    ap.add_argument("--stop-gripper-after", type=float, default=0.0,
                    help="the gripper JointState goes silent after this many seconds")
    ap.add_argument("--extra-joints", nargs="*", default=[],
                    help="joint names the policy does not use, appended to the arm message")
    ap.add_argument("--no-stamps", action="store_true",
                    help="leave header.stamp zero on every message (an unstamped driver)")
    ap.add_argument("--stamp-each", action="store_true",
                    help="stamp each message when it is built, as a driver that publishes "
                         "each camera as soon as it has it (default: one stamp per set)")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until Ctrl-C")
    ap.add_argument("--reliable", action="store_true", help="reliable QoS (default best effort)")
    ap.add_argument("--stop-camera", type=int, default=-1, help="camera index that goes silent")
    ap.add_argument("--stop-after", type=float, default=0.0, help="... after this many seconds")
    ap.add_argument("--nan-joints-after", type=float, default=0.0)
    ap.add_argument("--malformed", default="",
                    help="send only malformed frames on camera 0: truncated|encoding|step|"
                         "size|jpeg|stamp; or joint states: joints (size) | dup_joints")
    ap.add_argument("--malformed-every", type=int, default=1,
                    help="corrupt every Nth camera-0 frame (2 = alternate good and bad)")
    ap.add_argument("--burst", type=float, default=1.0, help="rate multiplier after --burst-after")
    ap.add_argument("--burst-after", type=float, default=0.0)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import rclpy
    from flash_rt_ros.shutdown import is_normal_stop
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image, JointState

    from flash_rt_ros.messages import to_time

    args = parse_args(rclpy.utilities.remove_ros_args(argv or sys.argv)[1:])
    encs = [args.encodings[min(i, len(args.encodings) - 1)] for i in range(args.cameras)]
    topics = args.topics or [
        f"cam{i}/image_raw" + ("/compressed" if e in ("jpeg", "png") else "")
        for i, e in enumerate(encs)]
    rclpy.init(args=argv)
    node = rclpy.create_node("flash_rt_synthetic_publisher")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if args.reliable \
        else qos_profile_sensor_data
    pubs = [node.create_publisher(CompressedImage if e in ("jpeg", "png") else Image, t, qos)
            for e, t in zip(encs, topics)]
    jpub = node.create_publisher(JointState, args.joint_topic, qos)
    gpub = (node.create_publisher(JointState, args.gripper_topic, qos)
            if args.gripper_joints else None)
    n_arm = len(args.joints) - args.gripper_joints
    start = time.monotonic()
    node.get_logger().info(f"publishing {args.cameras} cameras {encs} {args.width}x"
                           f"{args.height} at {args.rate} Hz on {topics}")

    count = [0]

    def clock_and_stamp():  # -> (node clock ns, header stamp: zero with --no-stamps)
        now_ns = node.get_clock().now().nanoseconds
        return now_ns, to_time(0 if args.no_stamps else now_ns)

    restamp = args.stamp_each and not args.no_stamps  # a fresh stamp for every message

    def publish_once() -> None:
        elapsed = time.monotonic() - start
        now_ns, stamp = clock_and_stamp()
        for i, (enc, pub) in enumerate(zip(encs, pubs)):
            if i == args.stop_camera and elapsed >= args.stop_after:
                continue
            if restamp:
                now_ns, stamp = clock_and_stamp()
            fmt, data, step = encode(frame(i, now_ns, args.height, args.width), enc)
            if enc in ("jpeg", "png"):
                msg = CompressedImage(format=fmt, data=data)
            else:
                msg = Image(height=args.height, width=args.width, encoding=fmt, step=step,
                            data=data)
            msg.header.stamp = stamp
            msg.header.frame_id = f"cam{i}"
            if i == 0 and args.malformed and count[0] % args.malformed_every == 0:
                _corrupt(msg, args.malformed)
            pub.publish(msg)
        if restamp:
            now_ns, stamp = clock_and_stamp()
        values = joints(now_ns, len(args.joints))
        if args.nan_joints_after and elapsed >= args.nan_joints_after:
            values[0] = float("nan")
        names = list(args.joints[:n_arm]) + list(args.extra_joints)
        arm = values[:n_arm].tolist() + [0.0] * len(args.extra_joints)
        js = JointState(name=names, position=arm)
        if args.malformed == "joints":
            js.position = arm[:-1]
        elif args.malformed == "dup_joints":
            js.name, js.position = names + names[:1], arm + arm[:1]
        js.header.stamp = stamp
        jpub.publish(js)
        if gpub is not None and not (args.stop_gripper_after
                                     and elapsed >= args.stop_gripper_after):
            gs = JointState(name=list(args.joints[n_arm:]), position=values[n_arm:].tolist())
            gs.header.stamp = stamp
            gpub.publish(gs)
        count[0] += 1

    period = 1.0 / args.rate
    next_t = time.monotonic()
    try:
        while rclpy.ok():
            if args.duration and time.monotonic() - start > args.duration:
                break
            publish_once()
            burst = args.burst if (args.burst_after and
                                   time.monotonic() - start >= args.burst_after) else 1.0
            next_t += period / burst
            time.sleep(max(0.0, next_t - time.monotonic()))
    except BaseException as exc:
        if not is_normal_stop(exc):
            raise
    finally:
        # Machine-readable summary: tests compare what was sent with what the node saw.
        print(f"synthetic: published {count[0]} observations in "
              f"{time.monotonic() - start:.2f} s", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _corrupt(msg, kind: str) -> None:
    """Damage a camera message in one specific way (fault injection)."""
    from flash_rt_ros.messages import to_time

    if kind == "truncated":
        msg.data = bytes(msg.data)[: len(msg.data) // 2]
    elif kind == "encoding":
        msg.encoding = "32FC7"
    elif kind == "step":
        msg.step = 1
    elif kind == "size":
        msg.width = msg.width // 2 + 1
    elif kind == "jpeg":
        msg.data = b"\xff\xd8not a jpeg"
    elif kind == "stamp":
        msg.header.stamp = to_time(0)  # a new Time: the stamp object is shared


if __name__ == "__main__":
    sys.exit(main())
