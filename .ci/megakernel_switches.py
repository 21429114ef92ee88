"""Compile-check of the persistent expert kernel's build switches (CI, no GPU needed).

The default module build compiles every switch at its default only; a switch that is off
(an A/B not kept, or one prepared for the next device run) would rot unseen. This compiles
csrc/expert_megakernel.cu for sm_90a once per switch at its other value (the switches are
found in the sources: ``#ifndef FLASH_RT_MK_X`` / ``#define FLASH_RT_MK_X value``), in
parallel, and fails on any compiler error. ptxas spills and serialised-wgmma notes are
printed per switch and for the default itself, compiled the same way (informational:
.ci/build_kernels.sh fails on serialised wgmma in the module build, not on spills; the
default's known spill, 4 bytes in the tpad-48 instance since the folded action I/O became
the default in run 16, is in csrc/megakernel/expert_tasks.cuh at action_embedding).

    python .ci/megakernel_switches.py --cutlass-include DIR [--jobs N] [--nvcc PATH]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = ROOT / "csrc" / "expert_megakernel.cu"
# Switches whose other value is not the boolean flip of their default.
ALTERNATES = {"FLASH_RT_MK_COMBINE_BATCH": "16", "FLASH_RT_MK_MMA_CHAINS": "2"}


def switches() -> dict[str, str]:
    """Every FLASH_RT_MK_ build switch and its default, from the kernel's sources."""
    found: dict[str, str] = {}
    for path in [KERNEL, *sorted((ROOT / "csrc" / "megakernel").glob("*"))]:
        text = path.read_text()
        for name, value in re.findall(
                r"#ifndef (FLASH_RT_MK_\w+)\s*\n\s*#define \1 (\S+)", text):
            found[name] = value
    return found


def alternate(name: str, default: str) -> str:
    if name in ALTERNATES:
        return ALTERNATES[name]
    if default in ("0", "1"):
        return "1" if default == "0" else "0"
    raise SystemExit(f"{name} defaults to {default}: add its other value to ALTERNATES")


def compile_one(flag: str, nvcc: str, cutlass: str, out_dir: str) -> tuple[str, int, str]:
    name = flag.split("=")[0][2:] or "default"  # ("": the default build)
    cmd = [nvcc, "-cubin", "-O3", "-std=c++17", "-I", str(ROOT / "csrc"), "-isystem", cutlass,
           "-gencode=arch=compute_90a,code=sm_90a", '-DFLASH_RT_GPU_ARCHS="90a"',
           "-Xptxas", "-v", *([flag] if flag else []), "-o", os.path.join(out_dir, name + ".cubin"),
           str(KERNEL)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return flag, r.returncode, r.stdout + r.stderr


def summary(log: str) -> str:
    spills = sorted({int(n) for n in re.findall(r"(\d+) bytes spill stores", log) if int(n)})
    serial = "Potential Performance Loss" in log
    return (f"spills {spills} bytes" if spills else "no spills") + \
        (", ptxas serialised wgmma" if serial else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cutlass-include", required=True, help="CUTLASS / CuTe include dir")
    ap.add_argument("--nvcc", default="nvcc")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    flags = [f"-D{n}={alternate(n, d)}" for n, d in sorted(switches().items())]
    if not flags:
        print("megakernel_switches: no FLASH_RT_MK_ switch found in the sources", file=sys.stderr)
        return 1
    failed = []
    with tempfile.TemporaryDirectory() as out, ThreadPoolExecutor(args.jobs) as pool:
        for flag, rc, log in pool.map(lambda f: compile_one(f, args.nvcc, args.cutlass_include, out),
                                      [""] + flags):
            label = f"switch {flag}" if flag else "default build"
            print(f"megakernel {label}: {'compiled, ' + summary(log) if rc == 0 else 'FAILED'}")
            if rc:
                failed.append(flag)
                print("\n".join(line for line in log.splitlines() if "error" in line)[:4000])
    if failed:
        print(f"megakernel_switches: {len(failed)} of {len(flags)} switch builds failed: {failed}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
