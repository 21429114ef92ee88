#!/usr/bin/env bash
# One device call for the persistent expert kernel: build the module for sm_90a, check the
# kernel against the sequence (bench/expert_step.py prints every output's agreement and
# both step times), run its kernel tests and the attention regression tests, and save the
# SASS instruction mix. Everything lands in $OUT (log.txt, *.json).
#   bash bench/device/megakernel_session.sh [stage ...]   stages: build diag tests ncu full
# Wheels the device lacks travel in carry/ (pybind11).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1
STAGES=${*:-build diag tests}
python3 -m pip install -q --no-index --no-deps --target /tmp/site carry/*.whl 2>&1 | tail -1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
t0=$(date +%s)
stage() { echo "=== $1 ($(( $(date +%s) - t0 )) s)"; }

if [[ " $STAGES " == *" build "* ]]; then
  stage build
  cmake -S csrc -B build/dev -G Ninja -DGPU_ARCH=90a -DPython_EXECUTABLE="$(command -v python3)" \
        -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  cmake --build build/dev -j 16 2>&1 | grep -E "error|warning|spill|FAILED" | head -40
  python3 -c "from flash_rt import kernels; print('module', kernels.load().built_archs())" || exit 1
  so=$(ls flash_rt/flash_rt_kernels*.so)
  cuobjdump -sass "$so" > "$OUT/sass.txt" 2>/dev/null
  echo "SASS: QGMMA $(grep -c QGMMA "$OUT/sass.txt"), HGMMA $(grep -c HGMMA "$OUT/sass.txt"), UBLKCP $(grep -c UBLKCP "$OUT/sass.txt")"
  gzip -f "$OUT/sass.txt"
fi
if [[ " $STAGES " == *" diag "* ]]; then
  stage "diag depth 1"
  timeout 150 python3 bench/expert_step.py --configs small:2:50 full:2:50 --depth 1 --iters 50 \
      --out "$OUT/diag_depth1.json"
  if [[ -n "${DIAG_SWAP:-}" ]]; then
    stage "diag depth 1, descriptors swapped"
    FLASH_RT_MK_DESC_SWAP=1 timeout 120 python3 bench/expert_step.py --configs small:2:50 --depth 1 --iters 20
  fi
  stage "full depth"
  timeout 240 python3 bench/expert_step.py --configs full:2:50 full:1:10 full:3:10 --iters 200 \
      --out "$OUT/expert_step.json"
fi
if [[ " $STAGES " == *" tests "* ]]; then
  stage tests
  timeout 240 python3 -m pytest -q -x test/kernels/test_expert_megakernel.py test/kernels/test_attention.py \
      -p no:cacheprovider 2>&1 | tail -25
fi
if [[ " $STAGES " == *" ncu "* ]]; then
  stage ncu
  timeout 200 ncu --set full -k regex:expert_megakernel --launch-skip 2 --launch-count 1 \
      -o "$OUT/megakernel" python3 bench/expert_step.py --configs full:2:50 --iters 3 >/dev/null 2>&1
  ncu --import "$OUT/megakernel.ncu-rep" --page details 2>/dev/null | \
      grep -E "Duration|DRAM Throughput|Memory Throughput|Registers|Achieved Occupancy|Warp Cycles|Stall" | head -30
fi
stage done
