#!/usr/bin/env bash
# Attention-backend A/B for issue 15 (docs/kernels.md, "Attention backends for the encoders"):
# our prefix / SigLIP attention against torch SDPA (flash, cuDNN, efficient), torch's FA2
# varlen entry, and the carried packages (FlashAttention-4, the cuDNN frontend; FA3 if a
# build of it is carried). Everything lands in $OUT (log.txt, attention_backends.json).
#   bash bench/device/attention_backends_session.sh [stage ...]
# stages: prepare  HERE, not on the device: download the pinned wheels into carry/attn/ and
#                  split the one over the 64 MiB carry limit (nvidia-cutlass-dsl-libs-cu13,
#                  ~88 MiB) into carry/attn/a (first part) and carry/attn/b (the rest)
#         stash    device, call 1 (carry: carry/attn/a): keep the first part in /tmp on the
#                  warm machine for the next call
#         install  device, call 2 (carry: carry/attn/b): join the parts, check SHA256SUMS,
#                  pip install into /tmp/site (--no-index --no-deps)
#         build    the kernel module for sm_90a (CMake + Ninja)
#         bench    python bench/attention_backends.py (FA4 compiles on first use: minutes)
# Device plan (each call under the 10-minute limit): call 1 `... stash build` with carry
# ["carry/attn/a"]; call 2 on the same warm machine `... install bench` with carry
# ["carry/attn/b"] (the module built in call 1 stays there). The JSON is rewritten after
# every row, so a bench cut short keeps what finished; a repeat `bench` call reuses FA4's
# compiled kernels. Without carried wheels the torch backends and ours still run; missing
# packages are reported as skipped rows.
# shellcheck source=bench/device/session_common.sh
source "$(dirname "$0")/session_common.sh"
SITE=${SITE:-/tmp/site}
STASH=${STASH:-/tmp/attn_stash}
STAGES=${*:-install build bench}
has prepare || use_carried_wheels  # pybind11 for the kernel module's build

# Pinned candidates (PyPI, cp312 x86_64; read 2026-12-06). flash-attn-4 needs the CuTe DSL
# (nvidia-cutlass-dsl + libs), apache-tvm-ffi, torch-c-dlpack-ext and quack-kernels; einops,
# cuda-bindings, protobuf and typing-extensions are already on the device image.
WHEELS=(flash-attn-4==4.0.0b40 quack-kernels==0.6.5 nvidia-cutlass-dsl==4.8.1
        nvidia-cutlass-dsl-libs-base==4.8.1 nvidia-cutlass-dsl-libs-core==4.8.1
        nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2
        torch-c-dlpack-ext==0.1.5 nvidia-cudnn-frontend==1.32.0)
SPLIT=nvidia_cutlass_dsl_libs_cu13  # the wheel too large for one call's carry
PART_BYTES=${PART_BYTES:-56m}

if has prepare; then
  stage prepare
  dl=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d "$dl" "${WHEELS[@]}" || exit 1
  rm -rf carry/attn && mkdir -p carry/attn/a carry/attn/b
  (cd "$dl" && sha256sum ./*.whl | sed 's| \./| |') > carry/attn/b/SHA256SUMS
  for w in "$dl"/*.whl; do
    name=$(basename "$w")
    if [[ $name == $SPLIT-* ]]; then
      split -b "$PART_BYTES" -d "$w" "carry/attn/a/$name.part-"
      for p in carry/attn/a/"$name".part-*; do [[ $p == *.part-00 ]] || mv "$p" carry/attn/b/; done
    else
      cp "$w" carry/attn/b/
    fi
  done
  rm -rf "$dl"
  du -sh carry/attn/a carry/attn/b
  echo "each call's carry plus the working tree must stay under 64 MiB"
  exit 0
fi

if has stash; then
  stage stash
  mkdir -p "$STASH"
  cp carry/attn/a/* "$STASH"/ 2>/dev/null && ls -l "$STASH" || echo "nothing in carry/attn/a to stash"
fi

if has install; then
  stage install
  parts=/tmp/attn_parts; whl=/tmp/attn_wheels
  rm -rf "$parts" "$whl"; mkdir -p "$parts" "$whl"
  for d in "$STASH" carry/attn/a carry/attn/b; do
    compgen -G "$d/*.part-*" >/dev/null && cp "$d"/*.part-* "$parts"/
  done
  for p in "$parts"/*.part-*; do
    [ -e "$p" ] || continue
    base=$(basename "${p%.part-*}")
    [ -e "$whl/$base" ] && continue
    if [ -e "$parts/$base.part-00" ]; then
      cat "$parts/$base".part-* > "$whl/$base"
    else
      echo "missing the first part of $base: run stage stash with carry/attn/a in an earlier call"
    fi
  done
  compgen -G "carry/attn/b/*.whl" >/dev/null && cp carry/attn/b/*.whl "$whl"/
  sums="$PWD/carry/attn/b/SHA256SUMS"
  for w in "$whl"/*.whl; do
    [ -f "$sums" ] && [ -e "$w" ] || break
    want=$(awk -v n="$(basename "$w")" '$2 == n {print $1}' "$sums")
    if [ -n "$want" ] && [ "$(sha256sum "$w" | cut -d' ' -f1)" != "$want" ]; then
      # a wheel joined from missing parts: leave it out (its rows then report skipped)
      echo "incomplete or corrupt: $(basename "$w") (stash its first part in an earlier call)"
      rm -f "$w"
    fi
  done
  if compgen -G "$whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$whl"/*.whl 2>&1 | tail -3
  else
    echo "no carried wheels: only torch's backends and ours will run"
  fi
fi
# --target installs skip .pth files: the CuTe DSL's one puts nvidia_cutlass_dsl/dsl_packages
# (the `cutlass` package) on sys.path, so name that folder here (checked on x86 Python 3.12).
export PYTHONPATH="$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the cuDNN frontend dlopens libcudnn: point it at the one torch's wheel brought
cudnn_lib=$(python3 -c "import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], 'lib'))" 2>/dev/null)
[ -n "$cudnn_lib" ] && export LD_LIBRARY_PATH="$cudnn_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if has build; then
  stage build
  build_kernels || echo "kernel module not built: 'ours' rows will be skipped"
fi

if has bench; then
  stage bench
  gpu_info
  python3 -m pip list 2>/dev/null | grep -iE "^(torch|flash|nvidia-cud|nvidia-cutlass|quack|apache-tvm)"
  # FA4 keeps its compiled kernels here, so a second bench call on the warm machine skips the JIT
  export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4_cache
  timeout "${BENCH_TIMEOUT:-500}" python3 bench/attention_backends.py --out "$OUT/attention_backends.json" \
      ${BENCH_ARGS:-}
  echo "bench exit $?"
fi
stage done
