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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def find_config(name: str) -> Path:
    """config/<name> from a source checkout, else from the installed share directory."""
    for base in (Path(__file__).resolve().parents[1] / "config",
                 Path(sys.prefix) / "share" / "flash_rt_ros" / "config"):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(f"config/{name} not found in the source tree or {sys.prefix}/share")


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], start_new_session=True)


def _stop(p: subprocess.Popen, timeout: float = 5.0) -> None:
    if p.poll() is not None:
        return
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


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
        subprocess.run([sys.executable, "-m", "flash_rt.tools.make_checkpoint", "--model",
                        "pi05", "--preset", "tiny", "--out", ckpt], check=True,
                       stdout=subprocess.DEVNULL)
    topics = [f"/cam{i}/image_raw" for i in range(args.cameras)]
    topic_list = "[" + ", ".join(f"'{t}'" for t in topics) + "]"

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from flash_rt_ros_msgs.msg import ActionChunk

    children = [
        _start(["-m", "flash_rt_ros.synthetic", "--cameras", str(args.cameras), "--width",
                str(args.width), "--height", str(args.height), "--rate", str(args.fps)]),
        _start(["-m", "flash_rt_ros.policy_node", "--ros-args", "--params-file",
                str(find_config("pi05_cpu.yaml")), "-p", f"checkpoint_dir:={ckpt}",
                "-p", f"camera_topics:={topic_list}", "-p", f"prompt:={args.prompt}"]),
    ]
    rclpy.init(args=[])
    node = rclpy.create_node("flash_rt_demo_listener")
    start = time.monotonic()

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
            if args.duration and time.monotonic() - start > args.duration:
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for c in reversed(children):
            _stop(c)
        node.destroy_node()
        rclpy.try_shutdown()
        tmp.cleanup()
        print("[demo] stopped", flush=True)
    return 0 if all(c.returncode in (0, -signal.SIGINT) for c in children) else 1


if __name__ == "__main__":
    sys.exit(main())
