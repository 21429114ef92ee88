# Sourced by every bench/device/*_session.sh (one device call each): the repository root as
# the working directory, $OUT (what comes back) with the whole output appended to
# $OUT/log.txt, unbuffered Python, `stage NAME` headers with the seconds since the start,
# and `build_kernels [CUDA_FLAGS]`, flash_rt_kernels for sm_90a (CMake + Ninja, reused on a
# warm machine; extra nvcc flags such as -DNAME=0 rebuild it as a variant for an A/B),
# printing the compiler's errors, warnings, spills and performance notes. Also `has STAGE`
# (is it in the script's $STAGES), `gpu_info` (the card, driver and clocks, for the log)
# and `use_carried_wheels` (carry/*.whl, e.g. pybind11, into /tmp/site on PYTHONPATH).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stage() { echo "=== $1 ($(( $(date +%s) - t0 )) s)"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }
gpu_info() { nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader; }

use_carried_wheels() {
  if compgen -G "carry/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site carry/*.whl 2>&1 | tail -1
  fi
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
}

build_kernels() {
  cmake -S csrc -B build/dev -G Ninja -DGPU_ARCH=90a -DPython_EXECUTABLE="$(command -v python3)" \
        -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_FLAGS="${1:-}" >"$OUT/cmake.log" 2>&1 \
    || { tail -30 "$OUT/cmake.log"; return 1; }
  cmake --build build/dev -j 16 2>&1 | grep -E "error|warning|spill|FAILED|Performance Loss" | head -40
  python3 -c "from flash_rt import kernels; print('module', kernels.load().built_archs())"
}
