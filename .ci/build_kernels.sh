#!/usr/bin/env bash
# Compile-check of the CUDA kernel module for CI (no GPU needed): one CMake build per GPU
# arch (each its own module, as a Hopper / Thor / RTX 5090 install would build it), then
# the build-inventory test imports every build and checks that all public bindings
# resolve, no flash_rt symbol is undefined, and SASS for the arch is present.
#   FLASH_RT_CI_ARCHS   archs to build (default "90a 110a 120a")
#   PYTHON              interpreter (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${FLASH_RT_CI_ARCHS:-"90a 110a 120a"}
PY=${PYTHON:-python3}
PYBIN=$(command -v "$PY")
# Absolute, but without resolving symlinks: a venv's python is a symlink to the base
# interpreter, and resolving it would lose the venv's site-packages (pybind11, cuBLAS).
PYBIN="$(cd "$(dirname "$PYBIN")" && pwd)/$(basename "$PYBIN")"
PY="$PYBIN"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$NVCC" ] || { echo "build_kernels: nvcc not found" >&2; exit 1; }

# Build dependencies (requirements-kernels.txt): pybind11, cuBLASLt headers + library
# (the toolkit's if it ships them, else the nvidia-cublas wheel) and CUTLASS (below).
"$PY" -c "import pybind11" 2>/dev/null || "$PY" -m pip install -q "pybind11>=2.12"
if [ ! -f "$(dirname "$NVCC")/../include/cublasLt.h" ] &&
   ! "$PY" -c "import nvidia, os, sys; sys.exit(not any(os.path.exists(os.path.join(p, s, 'include', 'cublasLt.h')) for p in nvidia.__path__ for s in ('cu13', 'cublas')))" 2>/dev/null; then
  "$PY" -m pip install -q "nvidia-cublas>=13,<14"
fi

# CUTLASS / CuTe headers for gemm_geglu_sm90.cu (header-only use: --no-deps skips the
# Python tooling's dependencies; found without importing it, as CMake does).
"$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('cutlass_library') is None)" 2>/dev/null ||
  "$PY" -m pip install -q --no-deps "nvidia-cutlass==4.2.0.0"

mkdir -p build
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
dirs=()
for a in $ARCHS; do
  b="build/ci-kernels-$a"
  start=$(date +%s)
  cmake -S csrc -B "$b" "${GEN[@]}" -DGPU_ARCH="$a" -DPython_EXECUTABLE="$PYBIN" \
        -DCMAKE_CUDA_COMPILER="$NVCC" -DFLASH_RT_OUTPUT_DIR="$PWD/$b/out" >"$b.configure.log" 2>&1 ||
    { cat "$b.configure.log"; exit 1; }
  cmake --build "$b" -j "$(nproc)" 2>&1 | tee "$b.build.log"
  # ptxas reports wgmma it had to serialise (C75xx "Potential Performance Loss"): on
  # sm_90a that silently costs the persistent expert kernel its MMA overlap. Fail on it.
  if grep -q "Potential Performance Loss" "$b.build.log"; then
    grep "Potential Performance Loss" "$b.build.log" | cut -c1-240 >&2
    echo "build_kernels: ptxas serialised wgmma for sm_$a (see above)" >&2
    exit 1
  fi
  echo "build_kernels: sm_$a built in $(( $(date +%s) - start )) s"
  dirs+=("$PWD/$b/out")
done
# The persistent kernel's build switches at their other values (sm_90a, the kernel's file
# alone): an off switch must keep compiling until it is measured or removed.
if [[ " $ARCHS " == *" 90a "* ]]; then
  start=$(date +%s)
  CUTLASS_INCLUDE=$("$PY" -c "import importlib.util as u, os; s = u.find_spec('cutlass_library'); print(os.path.join(s.submodule_search_locations[0], 'source', 'include'))")
  "$PY" .ci/megakernel_switches.py --cutlass-include "$CUTLASS_INCLUDE" --nvcc "$NVCC" \
      --jobs "$(nproc)"
  echo "build_kernels: megakernel switch builds in $(( $(date +%s) - start )) s"
fi
FLASH_RT_KERNELS_BUILDS=$(IFS=:; echo "${dirs[*]}") PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
  "$PY" -m pytest -q test/kernels/test_build_inventory.py
