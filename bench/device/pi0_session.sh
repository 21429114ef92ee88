#!/usr/bin/env bash
# Device calls for the Pi0 fast path (issue 16), one stage list per call (each stage fits
# the 10-minute command limit; checkpoints and the build stay on a warm machine between
# calls). Everything lands in $OUT (log.txt, *.json).
#   bash bench/device/pi0_session.sh [stage ...]
# stages: build     kernel module for sm_90a (CMake + Ninja)
#         kernels   the kernel tests Pi0 added (silu, M=1 GEMMs, one-query attention)
#         frontends test/gpu: Pi0's and Pi0.5's frontends on tiny/small (hopper, thor, rtx);
#                   FRONTEND_TESTS names the test files instead (e.g. only Pi0's)
#         ckpt      random full-size Pi0 and Pi0.5 checkpoints in $CKPTS (default /tmp/ckpt)
#         precision-pi0, precision-pi05   full-size fast path vs FP32 reference, 1/2/3 views x
#                   h10/h50 (FLASH_RT_PRECISIONS, FLASH_RT_PRECISION_CONFIGS choose; one model
#                   per call keeps each under 10 minutes)
#         bench     replay / predict / per-stage p50-p99, Pi0.5 and Pi0 in one run:
#                   2 views h50, then 1 and 3 views h10
#         state-ab  Pi0's state pass on the kernel vs the sequence (FLASH_RT_PI0_STATE_PASS)
# Wheels the device lacks travel in carry/ (pybind11).
# shellcheck source=bench/device/session_common.sh
source "$(dirname "$0")/session_common.sh"
CKPTS=${CKPTS:-/tmp/ckpt}
STAGES=${*:-build kernels frontends}
use_carried_wheels
gpu_info

if has build; then
  stage build
  build_kernels || exit 1
fi
if has kernels; then
  stage kernels
  timeout 300 python3 -m pytest -q -rs -p no:cacheprovider test/kernels/test_elementwise.py \
      test/kernels/test_gemm.py test/kernels/test_attention.py -k "silu or state_" 2>&1 | tail -15
fi
if has frontends; then
  stage frontends
  timeout 560 python3 -m pytest -q -rs -p no:cacheprovider \
      ${FRONTEND_TESTS:-test/gpu/test_pi0_frontends.py test/gpu/test_pi05_frontends.py} 2>&1 | tail -25
fi
if has ckpt; then
  stage ckpt
  for m in pi0 pi05; do
    [ -f "$CKPTS/$m/model.safetensors" ] || python3 -m flash_rt.tools.make_checkpoint \
        --model "$m" --preset full --out "$CKPTS/$m" | tail -1
  done
fi
for m in pi0 pi05; do
  has "precision-$m" || continue
  stage "precision-$m"
  FLASH_RT_FULL=1 FLASH_RT_FULL_PI0_CKPT="$CKPTS/pi0" FLASH_RT_FULL_CKPT="$CKPTS/pi05" \
  FLASH_RT_PI0_PRECISION_REPORT="$OUT/pi0_precision.json" \
  FLASH_RT_PRECISION_REPORT="$OUT/pi05_precision.json" \
      timeout 580 python3 -m pytest -q -rs -p no:cacheprovider -s \
      "test/gpu/test_${m}_precision_full.py" 2>&1 | grep -E "chunk_cosine|passed|failed|Error" | tail -30
done
if has bench; then
  stage bench
  timeout 290 python3 bench/policy.py --models pi05 pi0 --ckpt "pi05=$CKPTS/pi05" "pi0=$CKPTS/pi0" \
      --views 2 --horizon 50 --baselines "" --out "$OUT/bench_2v_h50.json" | tail -3
  timeout 290 python3 bench/policy.py --models pi05 pi0 --ckpt "pi05=$CKPTS/pi05" "pi0=$CKPTS/pi0" \
      --views 1 3 --horizon 10 --baselines "" --out "$OUT/bench_1v3v_h10.json" | tail -3
fi
if has state-ab; then
  # Pi0's state-token pass on the persistent kernel (default) against the kernel sequence
  # (FLASH_RT_PI0_STATE_PASS=sequence), the steps on the kernel in both; STATE_VIEWS /
  # STATE_HORIZONS choose the configs (default 2 views h50)
  for pass in megakernel sequence; do
    stage "state pass: $pass"
    FLASH_RT_PI0_STATE_PASS=$pass timeout 280 python3 bench/policy.py --models pi0 \
        --ckpt "pi0=$CKPTS/pi0" --views ${STATE_VIEWS:-2} --horizon ${STATE_HORIZONS:-50} \
        --iters ${ITERS:-100} --baselines "" --out "$OUT/pi0_state_pass_$pass.json" | tail -2
  done
fi
stage done
