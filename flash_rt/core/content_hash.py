"""Whole-file sha256 content hashes, memoised per file version.

Hashing a full-size 13.4 GB checkpoint reads every byte (seconds to tens of seconds), so
the result is memoised in a small JSON file keyed by the file's real path and its
(size, mtime_ns, inode, device): the full read happens once per version of the file, and
a file that is rewritten, replaced or touched is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Iterator

from flash_rt.core.atomic_io import write_json_atomic

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20
MEMO_FILE = "content_hashes.json"
_MEMO_VERSION = 1
_warned_memo_dirs: set[str] = set()


def _read_chunks(fh: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """The bytes of ``fh`` in order, in chunks read into two reused buffers.

    The next chunk is read on a helper thread while the caller consumes the current one
    (file reads and sha256 both release the GIL), so hashing and disk reads overlap. A
    yielded chunk is valid until the next one is requested.
    """
    views = [memoryview(bytearray(chunk_bytes)) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="content-hash") as pool:
        pending = pool.submit(fh.readinto, views[0])
        current = 0
        while n := pending.result():
            pending = pool.submit(fh.readinto, views[1 - current])
            yield views[current][:n]
            current = 1 - current


def _version(st: os.stat_result) -> dict[str, int]:
    """What identifies one version of a file: changes to any of these mean rehash."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "device": st.st_dev}


def _read_memo(memo_dir: Path) -> dict[str, dict]:
    try:
        memo = json.loads((memo_dir / MEMO_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("ignoring unreadable hash memo %s: %s", memo_dir / MEMO_FILE, exc)
        return {}
    if not isinstance(memo, dict) or memo.get("version") != _MEMO_VERSION:
        return {}
    files = memo.get("files")
    return files if isinstance(files, dict) else {}


def _memo_lookup(memo_dir: Path, real: str, version: dict[str, int]) -> str | None:
    entry = _read_memo(memo_dir).get(real)
    if not isinstance(entry, dict) or entry.get("version") != version:
        return None
    digest = entry.get("sha256")
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def _still_current(path: str, entry) -> bool:
    try:
        return isinstance(entry, dict) and entry.get("version") == _version(os.stat(path))
    except OSError:
        return False


def _memo_store(memo_dir: Path, real: str, version: dict[str, int], digest: str) -> None:
    """Add one entry, dropping entries whose files are gone or have changed since."""
    files = {p: e for p, e in _read_memo(memo_dir).items() if p != real and _still_current(p, e)}
    files[real] = {"version": version, "sha256": digest}
    try:
        memo_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo_dir / MEMO_FILE, {"version": _MEMO_VERSION, "files": files})
    except OSError as exc:
        if str(memo_dir) not in _warned_memo_dirs:
            _warned_memo_dirs.add(str(memo_dir))
            log.warning("cannot write the content-hash memo in %s (%s): large files will be "
                        "hashed again next time", memo_dir, exc)


def file_content_hash(path: str | os.PathLike, memo_dir: Path | str | None = None) -> str:
    """sha256 hex digest of the whole content of ``path``.

    With ``memo_dir``, a memo there (``content_hashes.json``) returns the digest without
    reading the file while its real path, size, mtime_ns, inode and device are unchanged;
    without it the file is always read in full.
    """
    real = os.path.realpath(path)
    memo = Path(memo_dir).expanduser() if memo_dir is not None else None
    if memo is not None:
        hit = _memo_lookup(memo, real, _version(os.stat(real)))
        if hit is not None:
            log.debug("sha256 of %s from the memo in %s", real, memo)
            return hit
    start = time.perf_counter()
    h = hashlib.sha256()
    with open(real, "rb", buffering=0) as fh:
        before = _version(os.fstat(fh.fileno()))
        for chunk in _read_chunks(fh):
            h.update(chunk)
        after = _version(os.fstat(fh.fileno()))
    digest = h.hexdigest()
    seconds = time.perf_counter() - start
    log.info("computed sha256 of %s (%.2f GB) in %.1f s (%.2f GB/s)", real, before["size"] / 1e9,
             seconds, before["size"] / 1e9 / max(seconds, 1e-9))
    if before != after:
        log.warning("%s changed while it was being hashed; its hash is not memoised", real)
    elif memo is not None:
        _memo_store(memo, real, before, digest)
    return digest


def _files_below(directory: Path) -> list[tuple[str, Path]]:
    """(posix path relative to ``directory``, path) of every regular file, in path order."""
    return sorted((p.relative_to(directory).as_posix(), p)
                  for p in directory.rglob("*") if p.is_file())


def directory_content_hash(directory: str | os.PathLike,
                           memo_dir: Path | str | None = None) -> str:
    """sha256 hex over every file below ``directory``: relative path, size and the file's
    own :func:`file_content_hash` (memoised per file in ``memo_dir``), in path order.

    For checkpoints stored as many files (Orbax's OCDBT store): renaming, adding, removing
    or changing any file changes the hash, and only changed files are read again.
    """
    root = Path(directory)
    h = hashlib.sha256(b"flash_rt.directory_content_hash\0")
    for rel, path in _files_below(root):
        h.update(f"{rel}\0{path.stat().st_size}\0{file_content_hash(path, memo_dir)}\n".encode())
    return h.hexdigest()


SMALL_FILE_BYTES = 1 << 16


def directory_fingerprint(directory: str | os.PathLike) -> str:
    """Short id of a directory's content without reading its large files: relative paths and
    sizes of every file plus the bytes of the small ones (manifests, metadata)."""
    root = Path(directory)
    h = hashlib.sha256(b"flash_rt.directory_fingerprint\0")
    for rel, path in _files_below(root):
        size = path.stat().st_size
        h.update(f"{rel}\0{size}\n".encode())
        if size <= SMALL_FILE_BYTES:
            h.update(path.read_bytes())
    return h.hexdigest()[:16]
