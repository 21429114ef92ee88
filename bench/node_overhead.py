"""Node overhead: newest camera stamp -> ActionChunk publication, minus the frontend's time.

Runs the synthetic publisher (N cameras, WxH, rgb8) and the policy node as separate
processes over real DDS, collects chunks, and reports p50/p99 of
  overhead      = node_latency_ms - inference_latency_ms   (measured by the node at publish)
  delivered     = (receipt here - header.stamp) - inference_latency_ms  (adds chunk delivery)
  stamp_to_chunk = receipt here - header.stamp   (camera stamp to chunk, inference included)
for each (camera rate, trigger) combination. header.stamp is the newest input stamp.
The node's own diagnostics split the overhead (their last report, over every chunk of the
run, warm-up included): ``own_overhead`` = observation in hand (the triggering frame's
arrival, or the timer tick) to publication minus predict, the node's own work;
``input_delay`` = newest stamp to that arrival (driver and DDS transport).
``--stamps each`` (default) has the publisher stamp every message when it builds it, as a
driver that publishes each camera as soon as it has it, so stamp-to-receipt is transport
only; ``--stamps set`` stamps the whole set once before building it, which adds the
publisher's own time for the later cameras (~3 ms per 640x480 rgb8 frame in Python).
``--encoding jpeg`` publishes CompressedImage (the node decodes JPEG) instead of raw rgb8;
``--jpeg-decoder gpu`` has the node decode it with nvImageCodec (flash_rt_ros.jpeg).

    python bench/node_overhead.py --hardware cpu            # tiny checkpoint generated
    python bench/node_overhead.py --checkpoint DIR --hardware hopper --params pi05_hopper.yaml \
        --rates 30 --encoding jpeg --chunks 200
    python bench/node_overhead.py --checkpoint GROOT_DIR --params groot_cpu.yaml --cameras 2 \
        --rates 0.2 --triggers timer --chunks 3 --skip 0 --timeout 900   # full-size GR00T
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from flash_rt_ros.processes import (camera_topics, find_config, make_tiny_checkpoint,
                                    node_cmd, publisher_cmd, start, stop)


def run_case(args, ckpt, fps: float, trigger: str, domain: int) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from flash_rt_ros_msgs.msg import ActionChunk

    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    started = time.monotonic()
    kids = [start(publisher_cmd(args.cameras, args.width, args.height, fps, args.encoding,
                                stamp_each=args.stamps == "each"),
                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            start(node_cmd(find_config(args.params), ckpt,
                           camera_topics(args.cameras, args.encoding),
                           hardware=args.hardware, trigger=trigger, rate_hz=float(fps),
                           max_observation_age_s=2.0, jpeg_decoder=args.jpeg_decoder)
                  + ["--log-level", "warn"], env=env)]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("overhead_bench", context=ctx)
    rows = []

    first = []

    def on_chunk(m):
        recv_ns = time.time_ns()
        first.append(first[0] if first else time.monotonic() - started)
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        rows.append((m.node_latency_ms - m.inference_latency_ms,
                     (recv_ns - stamp) / 1e6 - m.inference_latency_ms, m.inference_latency_ms,
                     (recv_ns - stamp) / 1e6))

    node.create_subscription(ActionChunk, "/flash_rt_policy/action_chunk", on_chunk, 50)
    diag = {}

    def on_diagnostics(m):
        for st in m.status:
            if "flash_rt_policy" in st.name:
                diag.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = time.monotonic() + args.timeout
    try:
        while len(rows) < args.chunks + args.skip and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.2)
        node_rss_gib = peak_rss_gib(kids[1].pid)
    finally:
        for k in reversed(kids):
            stop(k, timeout=10.0)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    data = np.array(rows[args.skip:]) if len(rows) > args.skip else np.zeros((0, 4))
    pct = (lambda c: [round(float(v), 3) for v in np.percentile(data[:, c], [50, 99])]
           if len(data) else [None, None])
    return {"camera_hz": fps, "trigger": trigger, "encoding": args.encoding,
            "jpeg_decoder": args.jpeg_decoder, "stamps": args.stamps,
            "chunks": int(len(data)),
            "overhead_ms_p50_p99": pct(0), "delivered_overhead_ms_p50_p99": pct(1),
            "inference_ms_p50_p99": pct(2), "stamp_to_chunk_ms_p50_p99": pct(3),
            "node_own_overhead_ms_p50_p99": diag_pair(diag, "own_overhead_ms"),
            "node_input_delay_ms_p50_p99": diag_pair(diag, "input_delay_ms"),
            "first_chunk_s": round(first[0], 1) if first else None,
            "node_peak_rss_gib": node_rss_gib}


def diag_pair(diag: dict, name: str) -> list:
    """[p50, p99] of ``name`` from the node's last diagnostics (None where absent)."""
    out = []
    for q in ("p50", "p99"):
        try:
            out.append(round(float(diag[f"{name}_{q}"]), 3))
        except (KeyError, ValueError):
            out.append(None)
    return out


def peak_rss_gib(pid: int):
    """The process's peak resident set (VmHWM), read before it is stopped."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="default: a generated tiny Pi0.5")
    ap.add_argument("--hardware", default="cpu")
    ap.add_argument("--params", default="pi05_cpu.yaml", help="config/ params file")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--rates", type=float, nargs="*", default=[10.0, 30.0])
    ap.add_argument("--encoding", default="rgb8", choices=["rgb8", "jpeg"],
                    help="camera frames: raw rgb8 Image or JPEG CompressedImage")
    ap.add_argument("--jpeg-decoder", default="cpu", choices=["cpu", "gpu", "auto"],
                    help="the node's jpeg_decoder parameter (flash_rt_ros.jpeg)")
    ap.add_argument("--stamps", default="each", choices=["each", "set"],
                    help="publisher stamps each message as it is built, or the set once")
    ap.add_argument("--triggers", nargs="*", default=["camera", "timer"])
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3, help="first chunks ignored (warm-up)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per case, seconds")
    ap.add_argument("--out", help="write the JSON report here too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if not ckpt:
            ckpt = make_tiny_checkpoint(os.path.join(tmp, "tiny"))
        domain = 100 + os.getpid() % 30
        cases = []
        for fps in args.rates:
            for trig in args.triggers:
                case = run_case(args, ckpt, fps, trig, domain)
                print(json.dumps(case), flush=True)
                cases.append(case)
    report = {"hardware": args.hardware, "params": args.params, "cameras": args.cameras,
              "encoding": args.encoding, "jpeg_decoder": args.jpeg_decoder,
              "size": f"{args.width}x{args.height}", "cases": cases}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
