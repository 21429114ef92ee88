"""Start-up refusals of the node as ``fatal: <what>: <why>`` lines, never a traceback.

rcl parses ``--params-file`` inside ``rclpy.init`` and reports a malformed file as an
``RCLError`` whose text points into rcl's C sources; the node reads its params files first
(:func:`preflight`) so that a missing file, a FIFO or a YAML error is named with its path
and line instead. Whatever rcl still refuses is reported with its own reason, less the
source locations.
"""
from __future__ import annotations

import re

from flash_rt_ros.params import InvalidParams, read_params_file

_RCL_SOURCE = re.compile(r",? at /\S+:\d+")


def params_file_args(argv) -> list[str]:
    """The ``--params-file`` paths among the ``--ros-args`` of ``argv``."""
    files, in_ros, args = [], False, iter(argv)
    for arg in args:
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg == "--params-file":
            files.append(next(args, ""))
    return files


def preflight(argv) -> None:
    """InvalidParams for the first params file that cannot be read as one."""
    for path in params_file_args(argv):
        read_params_file(path)


def fatal_lines(exc: BaseException) -> list[str]:
    """What the node prints after ``fatal:`` for a start-up error: one line per refused
    parameter, rcl's reason without its source locations, else the error's message."""
    if isinstance(exc, InvalidParams):
        return [f"{name}: {why}" for name, why in exc.errors]
    if type(exc).__name__ == "RCLError":
        return ["--ros-args: " + _RCL_SOURCE.sub("", str(exc)).strip()]
    return [str(exc)]
