#!/usr/bin/env bash
# The node's GPU JPEG decoder (flash_rt_ros.jpeg, issue 19) on the device: decode cost per
# frame for OpenCV and every nvImageCodec backend (bench/jpeg_decode.py) and its GPU tests
# (test/gpu/test_jpeg_gpu.py). Everything lands in $OUT (log.txt, jpeg_decode.json).
#   here:       bash bench/device/gpu_jpeg_session.sh prepare   (carry/gpujpeg.tgz, ~10 MB)
#   on device:  bash bench/device/gpu_jpeg_session.sh [install bench test]   carry: carry/gpujpeg.tgz
# `install` also keeps the tarball in /tmp, so a following call on the same warm machine
# (node_overhead_session.sh ... jpeg_gpu, which carries the ROS wheels) finds it.
# The wheels (PyPI, read 2026-12-06) are cut to what decoding JPEG on CPython 3.12 needs:
# nvImageCodec's module for 3.12, its core library, its nvJPEG and libjpeg-turbo
# extensions, and libnvjpeg from nvidia-nvjpeg (the whole wheels are 29 MB).
# shellcheck source=bench/device/session_common.sh
source "$(dirname "$0")/session_common.sh"
STAGES=${*:-install bench test}
SITE=/tmp/gpujpeg_site
WHEELS=(nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43)

if has prepare; then
  stage prepare
  dl=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$dl/w" "${WHEELS[@]}" || exit 1
  mkdir -p "$dl/x" && for w in "$dl"/w/*.whl; do unzip -q -o "$w" -d "$dl/x"; done
  (cd "$dl/x" && tar -czf - nvidia/__init__.py nvidia/nvimgcodec/__init__.py \
      nvidia/nvimgcodec/nvimgcodec_impl.cpython-312-x86_64-linux-gnu.so \
      nvidia/nvimgcodec/libnvimgcodec.so.0 nvidia/nvimgcodec/extensions/libnvjpeg_ext.so.0.9.0 \
      nvidia/nvimgcodec/extensions/libjpeg_turbo_ext.so.0.9.0 nvidia/cu13/lib/libnvjpeg.so.13) \
      > carry/gpujpeg.tgz || exit 1
  rm -rf "$dl"
  ls -la carry/gpujpeg.tgz
  exit 0
fi

gpu_info
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
do_install() {
  stage "nvImageCodec + nvJPEG into $SITE"
  local tgz=carry/gpujpeg.tgz
  [ -f "$tgz" ] || tgz=/tmp/gpujpeg.tgz
  [ -f "$tgz" ] || { echo "no carry/gpujpeg.tgz (run prepare here, carry it)"; exit 1; }
  cp "$tgz" /tmp/gpujpeg.tgz 2>/dev/null
  rm -rf "$SITE" && mkdir -p "$SITE" && tar -xzf "$tgz" -C "$SITE" || exit 1
  python3 -c "from flash_rt_ros.jpeg import gpu_decoder_problem as g; print('gpu decoder:', g() or 'ok')"
}
do_bench() {
  stage "decode cost per frame (bench/jpeg_decode.py)"
  timeout 300 python3 bench/jpeg_decode.py --sizes 640x480 1280x720 --iters ${ITERS:-300} \
      --out "$OUT/jpeg_decode.json"
}
do_test() {
  stage "GPU JPEG tests"
  timeout 200 python3 -m pytest -q -s -p no:cacheprovider test/gpu/test_jpeg_gpu.py 2>&1 | tail -8
}
for st in $STAGES; do "do_$st"; done
stage done
