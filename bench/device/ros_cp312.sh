#!/usr/bin/env bash
# Prepare, on a developer machine, the ROS 2 environment the GPU machine needs to run the
# node: its image has Python 3.12 with torch but no ROS and no package registry. Output
# (ignored by git, carried to the device with the run tool's `carry`):
#   carry/ros-cp312/wheels/*.whl          ROS 2 Kilted runtime wheels for cp312 x86_64 and
#                                         their dependencies the device image lacks
#   carry/ros-cp312/flash_rt_ros_msgs.tgz the ActionChunk message package built for cp312
#                                         (relative to a venv prefix)
# and prints the sizes against the device tool's 64 MiB limit (working tree + carry).
#   PY312=/path/to/python3.12 bash bench/device/ros_cp312.sh   (cmake, a C compiler too)
# On the device: bench/device/node_overhead_session.sh installs them into a venv.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${ROS_CARRY:-$ROOT/carry/ros-cp312}"
PY312="${PY312:-python3.12}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# What the node imports from ROS (scripts/install_ros.sh's runtime list).
RUNTIME=(ros-rclpy ros-rmw-fastrtps-cpp ros-std-msgs ros-std-srvs ros-sensor-msgs
         ros-trajectory-msgs ros-diagnostic-msgs ros-lifecycle-msgs)
# Already in the device image (/work/.library/device/KINDS.md, "Python packages already
# there"): not carried.
ON_DEVICE='^(numpy|pyyaml|packaging|setuptools|typing_extensions|psutil|pillow|lark)-'

"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version'
"$PY312" -m venv "$WORK/venv"
VENV="$WORK/venv"
"$VENV/bin/python" -m pip install -q --upgrade pip "setuptools<80" wheel numpy
echo "[ros_cp312] ROS wheels + flash_rt_ros_msgs for $("$VENV/bin/python" -V)"
bash "$ROOT/scripts/install_ros.sh" "$VENV"

rm -rf "$OUT"
mkdir -p "$OUT/wheels"
"$VENV/bin/python" -m pip wheel -q --wheel-dir "$WORK/all" "${RUNTIME[@]}"
for w in "$WORK"/all/*.whl; do
  name="$(basename "$w" | tr 'A-Z' 'a-z')"
  [[ "$name" =~ $ON_DEVICE ]] || cp "$w" "$OUT/wheels/"
done
# the message package as built into the venv prefix (libraries, Python module, share/)
(cd "$VENV" && tar -czf "$OUT/flash_rt_ros_msgs.tgz" \
   lib/libflash_rt_ros_msgs__* lib/python3.12/site-packages/flash_rt_ros_msgs* \
   share/flash_rt_ros_msgs $(cd "$VENV" && ls -d share/ament_index/resource_index/*/flash_rt_ros_msgs))

carry=$(du -sk "$OUT" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -ck --files0-from=- | tail -1 | cut -f1)
echo "[ros_cp312] $(ls "$OUT/wheels" | wc -l) wheels; carry/ros-cp312: $((carry / 1024)) MiB;" \
     "working tree: $((tree / 1024)) MiB; together $(((carry + tree) / 1024)) MiB of 64 MiB"
if (( carry + tree > 64 * 1024 )); then
  echo "[ros_cp312] OVER the device tool's 64 MiB limit" >&2
  exit 1
fi
