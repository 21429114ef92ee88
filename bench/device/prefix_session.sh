#!/usr/bin/env bash
# One device call for issue 15's prefix work: the fused gate/up + GeGLU GEMM
# (gemm_fp8_geglu, CUTLASS SM90) against cuBLASLt + geglu_fp8. Everything lands in $OUT.
#   bash bench/device/prefix_session.sh [stage ...]
#   stages: build tests micro geglu
#   build: flash_rt_kernels for sm_90a (the CUTLASS headers from carry/nvidia_cutlass-*.whl)
#   tests: the fused GEMM's kernel tests, the GeGLU and GEMM kernel tests
#   micro: bench/gemm_geglu.py (the prefix MLP alone, 17 layers' weights, both paths)
#   geglu: whole-pipeline replays with FLASH_RT_FUSED_GEGLU=1 / 0 alternated (VIEWS,
#          HORIZONS; stage breakdown incl. the prefix), then full-size precision with it on;
#          GEGLU_CONFIG (default 0): the fused kernel's config (FLASH_RT_FUSED_GEGLU_CONFIG)
#   siglip_fp8: SigLIP in FP8 (precision mode fp8-all) against bf16 (fp8, the default):
#          replays at 1-3 views, h50 (stage breakdown), then its full-size precision on the
#          six configurations (issue 15 keeps it only if all six stay >= 0.999)
#   pdl: every kernel of the module with programmatic dependent launch (FLASH_RT_PDL=1,
#          csrc/common.h) against plain launches: its GPU frontend test, whole-pipeline
#          replays alternated twice (VIEWS, HORIZONS; stage breakdown), its precision
# Wheels the device lacks travel in carry/ (pybind11, nvidia-cutlass).
# shellcheck source=bench/device/session_common.sh
source "$(dirname "$0")/session_common.sh"
STAGES=${*:-build tests micro geglu}
use_carried_wheels
gpu_info

has build && { stage build; build_kernels || exit 1; }
if has tests; then
  stage "kernel tests: gemm_fp8_geglu, GeGLU, GEMM"
  timeout 300 python3 -m pytest -q -x test/kernels/test_gemm_geglu.py \
      test/kernels/test_elementwise.py test/kernels/test_gemm.py -p no:cacheprovider 2>&1 | tail -15
fi
if has micro; then
  stage "micro: prefix gate/up + GeGLU, fused vs cuBLASLt + geglu_fp8"
  timeout 240 python3 bench/gemm_geglu.py --out "$OUT/gemm_geglu.json" 2>&1 | tail -6
fi
if has geglu; then
  full_checkpoint
  for round in 1 2; do
    pipeline_replay "geglu_on_$round" FLASH_RT_FUSED_GEGLU=1 FLASH_RT_FUSED_GEGLU_CONFIG=${GEGLU_CONFIG:-0}
    pipeline_replay "geglu_off_$round" FLASH_RT_FUSED_GEGLU=0
  done
  pipeline_precision geglu FLASH_RT_FUSED_GEGLU=1 FLASH_RT_FUSED_GEGLU_CONFIG=${GEGLU_CONFIG:-0}
fi
if has siglip_fp8; then
  full_checkpoint
  stage "SigLIP FP8 (fp8-all) vs bf16 (fp8): replay, 1-3 views h50"
  timeout 420 python3 bench/policy.py --models pi05 --ckpt "$CK" --views 1 2 3 --horizon 50 \
      --precision fp8 fp8-all --iters ${ITERS:-60} --baselines '' --out "$OUT/pi05_siglip_fp8.json" \
      | grep -E '^\{"model"' | python3 -c "import json,sys
for l in sys.stdin:
    r = json.loads(l)
    for p in ('fp8', 'fp8-all'):
        f = r.get(p, {})
        if 'replay_ms' in f:
            print(r['views'], r['horizon'], p, 'replay p50', round(f['replay_ms']['p50'], 3),
                  'stages', {k: round(v['p50'], 3) for k, v in f.get('stages_ms', {}).items()})" 2>&1
  PRECISION_CONFIGS=${PRECISION_CONFIGS_ALL:-1x10,1x50,2x10,2x50,3x10,3x50} \
      pipeline_precision fp8_all FLASH_RT_PRECISIONS=fp8-all
fi
if has pdl; then
  stage "PDL: frontend tests"
  timeout 200 python3 -m pytest -q -rs -k "programmatic or capture" test/gpu/test_pi05_frontends.py \
      -p no:cacheprovider 2>&1 | tail -3
  full_checkpoint
  for round in 1 2; do
    pipeline_replay "pdl_on_$round" FLASH_RT_PDL=1
    pipeline_replay "pdl_off_$round" FLASH_RT_PDL=0
  done
  pipeline_precision pdl FLASH_RT_PDL=1
fi
stage done
