"""The standalone device probes (bench/device/*.cu, run by the device session scripts) compile
for sm_90a: a probe that breaks here would otherwise be found only on a rented GPU. No GPU
needed; skips (with the reason) without nvcc."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROBES = sorted((Path(__file__).resolve().parents[2] / "bench" / "device").glob("*.cu"))


def test_there_are_probes():
    assert PROBES, "bench/device/*.cu moved: update this test"


@pytest.mark.parametrize("src", PROBES, ids=lambda p: p.name)
def test_probe_compiles_for_sm90a(src, tmp_path):
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("needs nvcc")
    build = subprocess.run([nvcc, "-O3", "-std=c++17", "-arch=sm_90a", "-o", str(tmp_path / src.stem),
                            str(src)], capture_output=True, text=True, timeout=600, check=False)
    assert build.returncode == 0, build.stderr[-4000:]
