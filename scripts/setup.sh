#!/usr/bin/env bash
# One-shot set-up on a fresh Debian/Ubuntu machine: a venv in .venv with the engine, its
# test tools, ROS 2 Kilted from PyPI wheels and the flash_rt_ros_msgs interface package.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FLASH_RT_VENV:-$PWD/.venv}"
PY="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# setuptools < 80: colcon-core (installed with ROS) requires it
python -m pip install -q --upgrade pip "setuptools<80" wheel
# torch first and pinned: 2.13.0 is the CPU build on this project's machines; an unpinned
# 'torch' from another package's requirements would pull a multi-GB CUDA build instead.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -r requirements.txt
# The ROS install is skipped when the installed interface matches msg/ already and every
# ROS package the node imports is there (a venv from before one was added gets it).
if ! cmp -s msg/msg/ActionChunk.msg "$VENV/share/flash_rt_ros_msgs/msg/ActionChunk.msg" ||
   ! python -c "import std_srvs, lifecycle_msgs" 2>/dev/null; then
  bash scripts/install_ros.sh "$VENV"
fi
python -m pip install -q --no-build-isolation --no-deps -e .
echo "setup done: $VENV"
