"""Check that a path is a readable regular file before opening it, and say why not.

``Path.is_file()`` is False for a missing file, a directory, a FIFO and a symlink loop
alike, so "not found" would be reported for all four; and opening a FIFO blocks until a
writer appears, which hangs a loader forever. One check here names the path and the real
cause for every input file the engine and the ROS node read.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is (or links to) a regular file; else an OSError naming the path and
    what it is instead (missing, dangling or looping symlink, directory, FIFO, device)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise FileNotFoundError(f"{what} {path} is a symlink to {os.readlink(path)}, "
                                    "which does not exist") from None
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"{what} {path} is a symlink loop (too many levels of symbolic "
                          "links)") from None
        raise OSError(f"{what} {path}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return path
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    error = IsADirectoryError if stat.S_ISDIR(mode) else OSError
    raise error(f"{what} {path} is {kind}, expected a regular file")
