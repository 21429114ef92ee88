"""One-command demo: tiny Pi0.5 on the cpu frontend, synthetic cameras, chunks printed.

    python -m flash_rt_ros.demo                      # Ctrl-C stops everything
    python -m flash_rt_ros.demo --checkpoint DIR --cameras 3 --duration 30

Starts the synthetic publisher and the policy node as child processes (each in its own
process group, so Ctrl-C reaches this process only and it shuts them down in order),
listens to the node's ActionChunk topic over DDS and prints each chunk as it arrives.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time

import numpy as np

from flash_rt_ros.processes import (camera_topics, find_config, make_tiny_checkpoint,
                                    node_cmd, publisher_cmd, start, stop)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="checkpoint dir (default: a new tiny Pi0.5 in a temp dir)")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--fps", type=float, default=10.0, help="camera frame rate")
    ap.add_argument("--prompt", default="pick up the red cube")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until Ctrl-C")
    args = ap.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    tmp = tempfile.TemporaryDirectory(prefix="flash_rt_demo_")
    ckpt = args.checkpoint
    if not ckpt:
        ckpt = os.path.join(tmp.name, "tiny_pi05")
        print(f"[demo] generating a tiny Pi0.5 checkpoint in {ckpt}", flush=True)
        make_tiny_checkpoint(ckpt)

    import rclpy
    from flash_rt_ros.shutdown import is_normal_stop
    from flash_rt_ros_msgs.msg import ActionChunk

    children = [
        start(publisher_cmd(args.cameras, args.width, args.height, args.fps)),
        start(node_cmd(find_config("pi05_cpu.yaml"), ckpt, camera_topics(args.cameras),
                       prompt=args.prompt)),
    ]
    rclpy.init(args=[])
    node = rclpy.create_node("flash_rt_demo_listener")
    started = time.monotonic()

    def on_chunk(m: ActionChunk) -> None:
        a = np.asarray(m.actions, dtype=np.float32).reshape(m.horizon, m.action_dim)
        print(f"[demo] chunk #{m.sequence:<4d} seed={m.seed:<4d} {m.horizon}x{m.action_dim} "
              f"infer={m.inference_latency_ms:7.1f} ms  obs->publish={m.node_latency_ms:7.1f} ms"
              f"  a[0]={np.array2string(a[0], precision=3, suppress_small=True)}", flush=True)

    node.create_subscription(ActionChunk, "/flash_rt_policy/action_chunk", on_chunk, 10)
    print("[demo] waiting for the node (model load + warm-up); Ctrl-C to stop", flush=True)
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.2)
            if any(c.poll() is not None for c in children):
                print("[demo] a child process exited; stopping", file=sys.stderr)
                break
            if args.duration and time.monotonic() - started > args.duration:
                break
    except BaseException as exc:
        if not is_normal_stop(exc):
            raise
    finally:
        for c in reversed(children):
            stop(c)
        node.destroy_node()
        rclpy.try_shutdown()
        tmp.cleanup()
        print("[demo] stopped", flush=True)
    return 0 if all(c.returncode in (0, -signal.SIGINT) for c in children) else 1


if __name__ == "__main__":
    sys.exit(main())
