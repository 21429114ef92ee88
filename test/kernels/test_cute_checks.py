"""Host-only CuTe layout checks (test/kernels/cute_checks/, no GPU): compiled with nvcc
against the CUTLASS headers and run here. Skips (with the reason) without nvcc or the
nvidia-cutlass package."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).resolve().parent / "cute_checks"


def cutlass_include() -> str | None:
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    inc = os.path.join(next(iter(spec.submodule_search_locations)), "source", "include")
    return inc if os.path.exists(os.path.join(inc, "cutlass", "version.h")) else None


def test_geglu_accumulator_pairing(tmp_path):
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    inc = cutlass_include()
    if not os.path.exists(nvcc) or inc is None:
        pytest.skip("needs nvcc and the CUTLASS headers (pip install --no-deps nvidia-cutlass==4.2.0.0)")
    exe = tmp_path / "geglu_pairing"
    build = subprocess.run(
        [nvcc, "-std=c++17", "-arch=sm_90a", "-diag-suppress", "20011,20013", "-I", str(ROOT / "csrc"),
         "-isystem", inc, str(CHECKS / "geglu_pairing.cu"), "-o", str(exe)],
        capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and "pairing check passed" in run.stdout, run.stdout + run.stderr
