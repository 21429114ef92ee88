"""Atomic file replacement: write under a unique temporary sibling name, then ``os.replace``.

Readers see the old file or the new one, never a half-written one, and concurrent writers
never share a temporary file (its name carries the pid and a random token).
"""
from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_SUFFIXES = (".partial", ".tmp")


def temp_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh name beside ``path``: ``<name>.<pid>.<random><suffix>``."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write; on a clean exit it replaces ``path``,
    on any error it is removed and the error propagates."""
    path = Path(path)
    tmp = temp_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with replacing(path) as tmp, open(tmp, "x", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
