# Sourced by every bench/device/*_session.sh (one device call each): the repository root as
# the working directory, $OUT (what comes back) with the whole output appended to
# $OUT/log.txt, unbuffered Python, `stage NAME` headers with the seconds since the start,
# and `build_kernels [CUDA_FLAGS]`, flash_rt_kernels for sm_90a (CMake + Ninja, reused on a
# warm machine; extra nvcc flags such as -DNAME=0 rebuild it as a variant for an A/B),
# printing the compiler's errors, warnings, spills and performance notes. Also `has STAGE`
# (is it in the script's $STAGES), `gpu_info` (the card, driver and clocks, for the log)
# and `use_carried_wheels` (carry/*.whl, e.g. pybind11, into /tmp/site on PYTHONPATH);
# for whole-pipeline stages `full_checkpoint` (the full-size random Pi0.5 in $CK),
# `pipeline_replay LABEL [VAR=VALUE ...]` and `pipeline_precision LABEL [VAR=VALUE ...]`.
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
  # (BUILD_LOG, BUILD_JOBS: for builds side by side, `do_variants`)
  local log=${BUILD_LOG:-$OUT/cmake.log}
  cmake -S csrc -B build/dev -G Ninja -DGPU_ARCH=90a -DPython_EXECUTABLE="$(command -v python3)" \
        -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_FLAGS="${1:-}" >"$log" 2>&1 \
    || { tail -30 "$log"; return 1; }
  cmake --build build/dev -j "${BUILD_JOBS:-16}" 2>&1 | grep -E "error|warning|spill|FAILED|Performance Loss" | head -40
  python3 -c "from flash_rt import kernels; print('module', kernels.load().built_archs())"
}

# CK: the full-size random Pi0.5 checkpoint (made once per machine)
full_checkpoint() {
  stage "full checkpoint"
  CK=${FULL_CKPT:-/tmp/pi05_full}
  [ -f "$CK/model.safetensors" ] || python3 -m flash_rt.tools.make_checkpoint --model pi05 \
      --preset full --out "$CK" > /dev/null
}
# pipeline_replay LABEL [VAR=VALUE ...]: bench/policy.py over VIEWS x HORIZONS in that
# environment -> $OUT/pi05_LABEL.json and one line per config
pipeline_replay() {
  local label=$1; shift
  stage "pipeline replay, $label"
  env "$@" timeout 240 python3 bench/policy.py --models pi05 --ckpt "$CK" \
      --views ${VIEWS:-2} --horizon ${HORIZONS:-50} --iters ${ITERS:-100} --baselines '' \
      --out "$OUT/pi05_$label.json" \
      | grep -E '^\{"model"' | python3 -c "import json,sys
for l in sys.stdin:
    r = json.loads(l); f = r['fp8']
    print(r['views'], r['horizon'], 'replay p50/p99', round(f['replay_ms']['p50'], 3), round(f['replay_ms']['p99'], 3), 'stages', {k: round(v['p50'], 3) for k, v in f.get('stages_ms', {}).items()})" 2>&1
}
# pipeline_precision LABEL [VAR=VALUE ...]: full-size chunk cosine vs the FP32 reference
# (PRECISION_CONFIGS) -> $OUT/pi05_precision_LABEL.json
pipeline_precision() {
  local label=$1; shift
  stage "full-size precision vs the FP32 reference, $label"
  env "$@" FLASH_RT_FULL=1 FLASH_RT_FULL_CKPT="$CK" \
      FLASH_RT_PRECISION_CONFIGS=${PRECISION_CONFIGS:-1x10,2x50} \
      FLASH_RT_PRECISION_REPORT="$OUT/pi05_precision_$label.json" \
      timeout 300 python3 -m pytest -q -rs -p no:cacheprovider -s \
      test/gpu/test_pi05_precision_full.py 2>&1 | grep -E "chunk_cosine|passed|failed|Error" | tail -12
}
