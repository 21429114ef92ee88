"""Build inventory: the public binding list is declared once (flash_rt.kernels) and must
match csrc/bindings.cpp, every source must be in the single unconditional CMake source
list, and every built module (one per GPU_ARCH build) must resolve every binding.

The source checks need no GPU and no build (CI runs them). The built-module checks run
on each module named in FLASH_RT_KERNELS_BUILDS (colon-separated directories holding a
built flash_rt_kernels*.so, as .ci/build_kernels.sh produces), else on the installed
flash_rt.flash_rt_kernels, and skip with the reason when neither exists.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flash_rt import kernels

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"


def bindings_in_source() -> list[str]:
    text = (CSRC / "bindings.cpp").read_text()
    return re.findall(r'\bm\.def\(\s*"([A-Za-z0-9_]+)"', text)


def cmake_sources() -> list[str]:
    text = (CSRC / "CMakeLists.txt").read_text()
    m = re.search(r"set\(FLASH_RT_KERNEL_SOURCES\s+(.*?)\)", text, re.S)
    assert m, "CMakeLists.txt must define the single list FLASH_RT_KERNEL_SOURCES"
    return m.group(1).split()


def test_declared_bindings_match_the_pybind_module_source():
    src = bindings_in_source()
    assert len(src) == len(set(src)), f"duplicate m.def names: {sorted(src)}"
    assert set(src) == set(kernels.PUBLIC_BINDINGS), (
        f"only in bindings.cpp: {sorted(set(src) - set(kernels.PUBLIC_BINDINGS))}; "
        f"only in flash_rt.kernels.PUBLIC_BINDINGS: {sorted(set(kernels.PUBLIC_BINDINGS) - set(src))}")


def test_every_source_is_in_the_one_unconditional_target():
    listed = cmake_sources()
    on_disk = sorted(p.name for p in CSRC.iterdir() if p.suffix in (".cu", ".cpp"))
    assert sorted(listed) == on_disk, f"CMake list {sorted(listed)} vs csrc/ {on_disk}"
    text = (CSRC / "CMakeLists.txt").read_text()
    # one target: no per-arch object libraries or conditional target_sources
    assert "target_sources" not in text and "OBJECT" not in text
    assert len(re.findall(r"pybind11_add_module|add_library", text)) == 1


def test_no_arch_gated_kernel_code():
    # Every binding must behave the same in every arch build; code gated on the arch would
    # need matching binding gates and tests (docs/kernels.md). The exceptions are the
    # megakernel's per-arch instruction file (csrc/megakernel/arch_*.cuh) and the CUTLASS
    # SM90 kernel's entry point (csrc/gemm_geglu_sm90.cu): their code traps outside sm_90a
    # and the bindings refuse at run time on other GPUs (and builds without 90a); and the
    # programmatic-dependent-launch waits (csrc/pdl.cuh), nothing before sm_90.
    for p in CSRC.rglob("*"):
        if p.suffix not in (".cu", ".cpp", ".h", ".cuh"):
            continue
        text = p.read_text()
        if (p.parent.name == "megakernel" and p.name.startswith("arch_")) or (
                p.relative_to(CSRC).as_posix() == "gemm_geglu_sm90.cu"):
            gates = set(re.findall(r"__CUDA_ARCH[A-Z_0-9]*", text))
            assert gates == {"__CUDA_ARCH_FEAT_SM90_ALL"}, (p.name, gates)
            continue
        if p.relative_to(CSRC).as_posix() == "pdl.cuh":
            # griddepcontrol from sm_90; older builds compile the waits to nothing, exact
            # there (no launch starts early): every binding behaves the same
            assert set(re.findall(r"__CUDA_ARCH[A-Z_0-9]*", text)) == {"__CUDA_ARCH__"}
            assert text.count("#if __CUDA_ARCH__ >= 900") == text.count("asm volatile")
            continue
        assert "__CUDA_ARCH" not in text, f"{p.relative_to(CSRC)} gates code on the arch"


def test_every_launcher_declared_in_ops_h_is_defined():
    decls = re.findall(r"^\S.*?\b([a-z_0-9]+)\(", (CSRC / "ops.h").read_text(), re.M)
    decls = [d for d in decls if d not in ("if", "for")]
    bodies = "".join((CSRC / f).read_text() for f in cmake_sources() if f != "bindings.cpp")
    missing = [d for d in decls if not re.search(rf"\b{d}\([^;]*?\)\s*\{{", bodies)]
    assert not missing, f"declared in ops.h but defined in no listed source: {missing}"


# ---------------------------------------------------------------- built modules

def built_modules() -> list[str]:
    dirs = [d for d in os.environ.get("FLASH_RT_KERNELS_BUILDS", "").split(":") if d]
    mods = []
    for d in dirs:
        found = glob.glob(os.path.join(d, "flash_rt_kernels*.so"))
        assert found, f"FLASH_RT_KERNELS_BUILDS names {d} but it holds no flash_rt_kernels*.so"
        mods.append(found[0])
    if not mods:
        try:
            from flash_rt import flash_rt_kernels  # noqa: F401

            mods.append(flash_rt_kernels.__file__)
        except ImportError:
            pass
    return mods


PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("flash_rt_kernels", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print(json.dumps({"names": [n for n in dir(m) if not n.startswith("_")], "archs": m.built_archs(),
                  "geglu_interleave": getattr(m, "GEGLU_INTERLEAVE", None)}))
"""


@pytest.mark.parametrize("so", built_modules() or [None])
def test_built_module_resolves_every_binding(so):
    if so is None:
        pytest.skip("no built flash_rt_kernels module (build: bash .ci/build_kernels.sh)")
    import json

    # a fresh interpreter per module: several arch builds share one module name
    r = subprocess.run([sys.executable, "-c", PROBE, so], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"importing {so} failed:\n{r.stderr}"
    info = json.loads(r.stdout.strip().splitlines()[-1])
    missing = set(kernels.PUBLIC_BINDINGS + kernels.PUBLIC_ATTRIBUTES) - set(info["names"])
    assert not missing, f"{so} lacks {sorted(missing)}"
    assert info["archs"], "built_archs() is empty"
    # the GPU kernels' gate/up pairing and the weight spec's interleave are one layout
    from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP
    assert info["geglu_interleave"] == GATE_UP_GROUP, (info["geglu_interleave"], GATE_UP_GROUP)
    if shutil.which("nm"):
        und = subprocess.run(["nm", "-D", "--undefined-only", "-C", so], capture_output=True,
                             text=True).stdout
        bad = [ln for ln in und.splitlines() if "flash_rt::" in ln]
        assert not bad, f"unresolved flash_rt symbols in {so}: {bad}"
    cuobjdump = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if os.path.exists(cuobjdump):
        elf = subprocess.run([cuobjdump, "--list-elf", so], capture_output=True, text=True).stdout
        for a in info["archs"]:
            assert f"sm_{a}" in elf, f"{so} has no SASS for sm_{a}:\n{elf}"
