# Source me: ROS 2 environment for a venv set up by scripts/install_ros.sh.
#   source scripts/ros_env.sh [VENV]      (default: $VIRTUAL_ENV, else <repo>/.venv)
# Sets what a ROS 2 setup.bash would: the ament index, the libraries of the wheels and of
# flash_rt_ros_msgs, the repo on PYTHONPATH, Fast DDS as the middleware with a profile
# sized for camera frames, and discovery kept on this host unless the caller already
# chose otherwise.
_frr_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_frr_venv="${1:-${VIRTUAL_ENV:-$_frr_root/.venv}}"
_frr_venv="$(cd "$_frr_venv" && pwd)"
_frr_site="$("$_frr_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

export AMENT_PREFIX_PATH="$_frr_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
_frr_libs="$_frr_venv/lib"
for _d in "$_frr_site"/ros_*.libs; do [[ -d "$_d" ]] && _frr_libs="$_frr_libs:$_d"; done
export LD_LIBRARY_PATH="$_frr_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The wheels re-exec every interpreter once to set LD_LIBRARY_PATH; it is set now.
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export PYTHONPATH="$_frr_root:$_frr_site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$_frr_venv/bin:$PATH"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Camera publishers need a shared-memory segment larger than Fast DDS's 512 KB default, or
# the first camera of each burst of frames loses its frames (config/fastdds_camera_frames.xml).
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_frr_root/config/fastdds_camera_frames.xml}"
export ROS_VERSION=2 ROS_PYTHON_VERSION=3 ROS_DISTRO="${ROS_DISTRO:-kilted}"
unset _frr_root _frr_venv _frr_site _frr_libs _d
