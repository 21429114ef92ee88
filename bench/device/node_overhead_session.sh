#!/usr/bin/env bash
# One device call: node overhead and camera-stamp-to-chunk latency of the ROS node on the
# hopper fast path (H100/H200), 3 cameras 640x480 at 30 Hz, raw rgb8 and JPEG.
#   prepared here: bash bench/device/ros_cp312.sh      (ROS wheels for the device's 3.12)
#   on the device: bash bench/device/node_overhead_session.sh [stage ...]
#   stages: ros kernels ckpt raw jpeg jpeg_gpu jpeg_gpu_async   (default: all but the GPU
#   decoder's two; ~8 min budget)
#   jpeg_gpu: JPEG decoded by the node on the GPU (jpeg_decoder: gpu); needs
#   gpu_jpeg_session.sh's install in an earlier call on the same warm machine
# Everything lands in $OUT (log.txt, node_overhead_raw.json, node_overhead_jpeg.json).
# shellcheck source=bench/device/session_common.sh
source "$(dirname "$0")/session_common.sh"
STAGES=${*:-ros kernels ckpt raw jpeg}
CARRY=carry/ros-cp312
ROSVENV=/tmp/rosvenv
PRESET=${PRESET:-full}  # make_checkpoint preset (small: a short run when device time is short)
CKPT=${FULL_CKPT:-/tmp/pi05_$PRESET}
CHUNKS=${CHUNKS:-200}
use_carried_wheels  # pybind11 and the CUTLASS headers for the `kernels` stage's build
gpu_info

do_ros() {
  stage "ROS 2 venv over the image's python (torch stays visible)"
  python3 -m venv --system-site-packages "$ROSVENV" || exit 1
  "$ROSVENV/bin/python" -m pip install -q --no-index --no-deps --no-cache-dir "$CARRY"/wheels/*.whl || exit 1
  # The image's python may itself be a venv (then --system-site-packages reaches only its
  # base): a .pth makes every site directory of the image's python visible (torch, yaml).
  python3 -c "import site; print('\n'.join(site.getsitepackages()))" \
      > "$("$ROSVENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_image_site.pth"
  tar -xzf "$CARRY/flash_rt_ros_msgs.tgz" -C "$ROSVENV" || exit 1
}
ros_env() {
  # shellcheck disable=SC1091
  source scripts/ros_env.sh "$ROSVENV"
  python -c "import rclpy, std_srvs, lifecycle_msgs, torch; from flash_rt_ros_msgs.msg import ActionChunk; print('ROS ok, torch', torch.__version__)" || exit 1
}
do_kernels() {
  stage "flash_rt_kernels for sm_90a"
  build_kernels || exit 1
}
do_ckpt() {
  stage "$PRESET Pi0.5 checkpoint (random weights: timing only)"
  [ -f "$CKPT/model.safetensors" ] || python3 -m flash_rt.tools.make_checkpoint --model pi05 \
      --preset "$PRESET" --out "$CKPT" > /dev/null || exit 1
}
case_run() {  # $1 = rgb8 | jpeg, $2 = the JSON's name, $3 = the node's jpeg_decoder
  stage "node_overhead, hopper, 3 x 640x480 $1 at 30 Hz (jpeg_decoder ${3:-cpu})"
  ros_env
  timeout 280 python bench/node_overhead.py --checkpoint "$CKPT" --hardware hopper \
      --params pi05_hopper.yaml --cameras 3 --width 640 --height 480 --rates 30 \
      --triggers camera --encoding "$1" --chunks "$CHUNKS" --skip 10 --timeout 240 \
      --jpeg-decoder "${3:-cpu}" --out "$OUT/node_overhead_$2.json"
}
do_raw() { case_run rgb8 raw; }
do_jpeg() { case_run jpeg jpeg; }
do_jpeg_gpu() {
  [ -d /tmp/gpujpeg_site/nvidia/nvimgcodec ] || { echo "jpeg_gpu: run gpu_jpeg_session.sh install first (same warm machine)"; return; }
  PYTHONPATH="/tmp/gpujpeg_site${PYTHONPATH:+:$PYTHONPATH}" case_run jpeg "jpeg_gpu${1:-}" gpu
}
# the same with the callback not waiting for the decode's copy (FLASH_RT_ROS_JPEG_ASYNC=1)
do_jpeg_gpu_async() { FLASH_RT_ROS_JPEG_ASYNC=1 do_jpeg_gpu _async; }
for st in $STAGES; do "do_$st"; done
stage done
