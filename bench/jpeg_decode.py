"""JPEG decode cost per camera frame, as the node pays it: payload bytes -> RGB in a pinned
host slot (flash_rt_ros.jpeg), for OpenCV and for nvImageCodec's backends one at a time.

Reports wall p50 / p99 and the calling thread's CPU time per frame (what competes with the
node's other work), on the synthetic publisher's frames (the textured panorama, JPEG at
OpenCV's default quality 95) at the sizes asked for. JSON with device and versions.

    python bench/jpeg_decode.py --sizes 640x480 1280x720 --iters 300 --out jpeg.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from flash_rt_ros.buffers import host_buffer
from flash_rt_ros.jpeg import NvImageCodecJpeg, OpenCvJpeg, gpu_decoder_problem
from flash_rt_ros.synthetic import encode, frame

# (row name, nvImageCodec backends or None for OpenCV)
DECODERS = [("opencv", None), ("nvimagecodec_cpu", ("CPU_ONLY",)),
            ("nvimagecodec_hw", ("HW_GPU_ONLY",)), ("nvimagecodec_cuda", ("GPU_ONLY",)),
            ("nvimagecodec_hybrid", ("HYBRID_CPU_GPU",)),
            ("nvimagecodec_gpu_default", "default")]


def measure(decoder, payloads: list[np.ndarray], dst: np.ndarray, iters: int) -> dict:
    for p in payloads[:5]:  # warm-up (first GPU decode allocates)
        decoder.decode_into(p, dst)
    wall, cpu = [], []
    for i in range(iters):
        p = payloads[i % len(payloads)]
        w0, c0 = time.perf_counter(), time.thread_time()
        decoder.decode_into(p, dst)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.thread_time() - c0)
    w, c = np.array(wall) * 1e3, np.array(cpu) * 1e3
    return {"wall_ms": {"p50": float(np.percentile(w, 50)), "p99": float(np.percentile(w, 99))},
            "thread_cpu_ms": {"p50": float(np.percentile(c, 50)),
                              "p99": float(np.percentile(c, 99))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["640x480"])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    problem = gpu_decoder_problem()
    import cv2
    import torch
    out = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
           "opencv": cv2.__version__, "gpu_decoder_problem": problem, "rows": []}
    try:
        from flash_rt_ros.jpeg import nvimgcodec
        out["nvimgcodec"] = nvimgcodec().__version__
    except ImportError as exc:
        out["nvimgcodec"] = f"unavailable: {exc}"
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        payloads = [np.frombuffer(encode(frame(0, 123_456_789_000 + k * 33_000_000, h, w),
                                         "jpeg")[1], np.uint8) for k in range(16)]
        dst = host_buffer((h, w, 3), np.uint8)
        for name, backends in DECODERS:
            row = {"size": size, "decoder": name,
                   "payload_kb": float(np.mean([p.size for p in payloads]) / 1024)}
            try:
                if backends is None:
                    dec = OpenCvJpeg()
                elif backends == "default":
                    dec = NvImageCodecJpeg()
                else:
                    dec = NvImageCodecJpeg(backends=backends)
                row.update(measure(dec, payloads, dst, args.iters))
            except Exception as exc:  # a backend this machine lacks: reported, not fatal
                row["error"] = f"{type(exc).__name__}: {exc}"
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
