"""On-disk cache of converted weights and calibration tables.

Layout under the cache directory (``$FLASH_RT_CACHE_DIR``, default ``~/.cache/flash_rt``)::

    <kind>/<digest[:24]>.safetensors   the tensors; the header metadata holds the full key
    <kind>/<digest[:24]>.json          manifest: key, file size, sha256 of the whole file
    <kind>/<digest[:24]>.lock          flock target serialising publish against verify
    content_hashes.json                memo of checkpoint content hashes (content_hash.py)

An entry is valid only when its manifest is present and names the requested key and the
data file matches the manifest's size and sha256 (checked while reading, one pass). The
data file is written first under a unique temporary name and renamed into place, then the
manifest is written (atomically) after it, so a data file without a valid manifest is
incomplete. Anything wrong is logged as a WARNING naming the file and the reason, the bad
files are deleted and ``load`` returns None: the caller rebuilds and stores again.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch

from flash_rt.core.atomic_io import TEMP_SUFFIXES, temp_sibling, write_json_atomic
from flash_rt.core.content_hash import file_content_hash
from flash_rt.core.safetensors_stream import (
    SafetensorsReader, TensorEntry, dtype_name, write_streaming,
)

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process locking
    fcntl = None

log = logging.getLogger(__name__)

CACHE_ENV = "FLASH_RT_CACHE_DIR"
CACHE_OFF = "off"
FORMAT_VERSION = 1
META_FORMAT = "flash_rt.cache.format"
META_KIND = "flash_rt.cache.kind"
META_KEY = "flash_rt.cache.key"
_KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_STALE_TEMP_S = 3600.0  # temporaries untouched this long belong to a dead writer
_UNWRITABLE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}
_warned_unwritable: set[str] = set()

Progress = Callable[[int, int], None]


def cache_disabled_by_env() -> bool:
    return os.environ.get(CACHE_ENV, "").strip().lower() == CACHE_OFF


def default_cache_dir() -> Path:
    """``$FLASH_RT_CACHE_DIR`` if set (and not ``off``), else ``~/.cache/flash_rt``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env and env.lower() != CACHE_OFF:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "flash_rt"


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines a cached file's content.

    ``extra`` may also be given as a mapping or in any order; it is stored sorted by name,
    so keys equal field by field compare (and digest) equal. All values are strings.
    """

    checkpoint_hash: str  # file_content_hash of model.safetensors
    hardware: str  # "hopper" | "thor" | "rtx_sm120" | ...
    precision: str  # e.g. "fp8-e4m3"
    spec_version: str  # bumped when the weight spec / conversion changes
    kernels_version: str  # e.g. flash_rt version + built archs
    extra: tuple[tuple[str, str], ...] = ()  # config dims, views, steps, ...

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name != "extra" and not isinstance(getattr(self, f.name), str):
                raise TypeError(f"CacheKey.{f.name} must be a str, got "
                                f"{type(getattr(self, f.name)).__name__}")
        pairs = self.extra.items() if isinstance(self.extra, Mapping) else self.extra
        extra = []
        for pair in pairs:
            if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                    or not all(isinstance(x, str) for x in pair)):
                raise TypeError(f"CacheKey.extra entries must be (str, str) pairs, got {pair!r}")
            extra.append((pair[0], pair[1]))
        extra.sort()
        names = [k for k, _ in extra]
        if len(set(names)) != len(names):
            raise ValueError(f"CacheKey.extra repeats a name: {names}")
        object.__setattr__(self, "extra", tuple(extra))

    def as_dict(self) -> dict:
        """JSON-ready: the string fields, and ``extra`` as a sorted list of [name, value]."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["extra"] = [list(p) for p in self.extra]
        return d

    def digest(self) -> str:
        """Stable sha256 hex over all fields."""
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"flash_rt.CacheKey\0" + blob.encode("utf-8")).hexdigest()


class _BadCache(Exception):
    """A cache entry that must not be used; the message is the reason."""


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise ValueError(f"cache kind must be a plain name like 'weights', got {kind!r}")
    return kind


def _entries(tensors: Mapping[str, torch.Tensor]) -> list[TensorEntry]:
    """Validate up front (programming errors raise) and make one-at-a-time CPU copiers."""
    if not isinstance(tensors, Mapping):
        raise TypeError("tensors must be a mapping of name -> tensor, got "
                        f"{type(tensors).__name__}")
    entries = []
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            raise TypeError(f"{name!r}: expected a dense torch.Tensor, got {type(t).__name__}")
        dtype_name(t.dtype)  # ValueError for a dtype the file cannot hold

        def make(t=t) -> torch.Tensor:
            return t.detach().to("cpu", memory_format=torch.contiguous_format)
        entries.append(TensorEntry(name, tuple(t.shape), make, t.dtype))
    return entries


def _key_json(key: CacheKey) -> str:
    return json.dumps(key.as_dict(), sort_keys=True, separators=(",", ":"))


def _stale_fields(stored, key: CacheKey) -> list[str]:
    want = key.as_dict()
    if not isinstance(stored, dict):
        return sorted(want)
    return sorted(f for f in want if stored.get(f) != want[f])


@contextmanager
def _locked(lock_path: Path, exclusive: bool) -> Iterator[None]:
    """flock ``lock_path`` (shared or exclusive); no lock where it cannot be opened
    (a read-only cache) or the platform has no flock."""
    fd = None
    if fcntl is not None:
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
            try:
                fd = os.open(lock_path, flags, 0o666)
                break
            except OSError:
                continue
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete %s: %s", p, exc)


class WeightCache:
    """Store and load named tensor sets (converted weights, calibration tables) by CacheKey."""

    def __init__(self, directory: Path | str | None = None, enabled: bool = True):
        self.directory = (Path(directory).expanduser() if directory is not None
                          else default_cache_dir())
        self.enabled = bool(enabled) and not cache_disabled_by_env()

    def __repr__(self) -> str:
        return f"WeightCache({str(self.directory)!r}, enabled={self.enabled})"

    def path(self, kind: str, key: CacheKey) -> Path:
        """``<dir>/<kind>/<digest[:24]>.safetensors``"""
        return self.directory / _check_kind(kind) / f"{key.digest()[:24]}.safetensors"

    def manifest_path(self, kind: str, key: CacheKey) -> Path:
        return self.path(kind, key).with_suffix(".json")

    def content_hash(self, path: str | os.PathLike) -> str:
        """``file_content_hash(path)`` memoised in this cache's directory (when enabled)."""
        return file_content_hash(path, self.directory if self.enabled else None)

    # -- load --------------------------------------------------------------------------

    def load(self, kind: str, key: CacheKey,
             progress: Progress | None = None) -> dict[str, torch.Tensor] | None:
        """The stored tensors (CPU, contiguous, exact dtypes/shapes), or None to rebuild."""
        if not self.enabled:
            return None
        data = self.path(kind, key)
        manifest = data.with_suffix(".json")
        try:
            present = data.exists() or manifest.exists()
        except OSError as exc:
            log.warning("cannot read %s cache file %s: %s", kind, data, exc)
            return None
        if not present:
            log.info("no %s cache for key %s in %s", kind, key.digest()[:24], data.parent)
            return None
        start = time.perf_counter()
        with _locked(data.with_suffix(".lock"), exclusive=False):
            try:
                tensors = self._read_verified(kind, key, data, manifest, progress)
            except _BadCache as exc:
                log.warning("discarding %s cache file %s: %s", kind, data, exc)
                _remove(data, manifest)
                return None
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        log.info("loaded %s cache %s: %d tensors, %.1f MB in %.2f s", kind, data, len(tensors),
                 nbytes / 1e6, time.perf_counter() - start)
        return tensors

    @staticmethod
    def _read_verified(kind: str, key: CacheKey, data: Path, manifest: Path,
                       progress: Progress | None) -> dict[str, torch.Tensor]:
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _BadCache("incomplete (no manifest)") from None
        except (OSError, ValueError) as exc:
            raise _BadCache(f"unreadable manifest ({exc})") from None
        if not isinstance(info, dict):
            raise _BadCache("unreadable manifest (not a JSON object)")
        if info.get("format") != FORMAT_VERSION:
            raise _BadCache(f"stale cache format {info.get('format')!r} "
                            f"(this version reads {FORMAT_VERSION})")
        stale = _stale_fields(info.get("key"), key)
        if stale:
            raise _BadCache(f"stale key (differs in {', '.join(stale)})")
        expected_size, expected_sha = info.get("size"), info.get("sha256")
        if not isinstance(expected_size, int) or not isinstance(expected_sha, str):
            raise _BadCache("unreadable manifest (no size / sha256)")
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            raise _BadCache("data file missing") from None
        except OSError as exc:
            raise _BadCache(f"unreadable ({exc})") from None
        if size != expected_size:
            reason = "truncated" if size < expected_size else "size mismatch"
            raise _BadCache(f"{reason} ({size} B on disk, manifest says {expected_size} B)")
        try:
            reader = SafetensorsReader(data)
            if reader.metadata.get(META_KEY) != _key_json(key):
                raise _BadCache("stale key (file header)")
            if reader.metadata.get(META_KIND) != kind:
                raise _BadCache(f"wrong kind {reader.metadata.get(META_KIND)!r} in file header")
            h = hashlib.sha256()
            tensors, total = {}, len(reader.keys())
            for i, (name, tensor) in enumerate(reader.iter_file(hasher=h)):
                tensors[name] = tensor
                if progress:
                    progress(i + 1, total)
        except (OSError, ValueError) as exc:
            raise _BadCache(f"unreadable ({exc})") from None
        if h.hexdigest() != expected_sha:
            raise _BadCache("checksum mismatch")
        return tensors

    # -- store -------------------------------------------------------------------------

    def store(self, kind: str, key: CacheKey, tensors: Mapping[str, torch.Tensor],
              progress: Progress | None = None) -> Path | None:
        """Write ``tensors`` (any device; copied to the host one at a time) under ``key``.

        Returns the data file's path, or None when caching is off or the write failed (a
        warning says why; the caller carries on with its in-memory tensors).
        """
        entries = _entries(tensors)
        if not self.enabled:
            return None
        data = self.path(kind, key)
        manifest = data.with_suffix(".json")
        tmp = temp_sibling(data, ".tmp")
        start = time.perf_counter()
        h = hashlib.sha256()
        try:
            data.parent.mkdir(parents=True, exist_ok=True)
            self._sweep_stale_temps(data.parent)
            write_streaming(tmp, entries, metadata={
                META_FORMAT: str(FORMAT_VERSION), META_KIND: kind, META_KEY: _key_json(key),
            }, progress=progress, hasher=h)
            size = tmp.stat().st_size
            with _locked(data.with_suffix(".lock"), exclusive=True):
                try:
                    manifest.unlink(missing_ok=True)
                    os.replace(tmp, data)
                    write_json_atomic(manifest, {
                        "format": FORMAT_VERSION, "kind": kind, "key": key.as_dict(),
                        "digest": key.digest(), "file": data.name, "size": size,
                        "sha256": h.hexdigest(), "tensors": len(entries),
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    })
                except BaseException:
                    _remove(data, manifest)
                    raise
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            self._warn_store_failed(data, exc)
            return None
        log.info("stored %s cache %s: %d tensors, %.1f MB in %.2f s", kind, data, len(entries),
                 size / 1e6, time.perf_counter() - start)
        return data

    def _warn_store_failed(self, data: Path, exc: OSError) -> None:
        if exc.errno not in _UNWRITABLE_ERRNOS:
            log.warning("could not store cache file %s: %s", data, exc)
        elif str(self.directory) not in _warned_unwritable:
            _warned_unwritable.add(str(self.directory))
            log.warning("cache directory %s is not writable (%s): carrying on without caching "
                        "(set %s to a writable directory, or to 'off')",
                        self.directory, exc, CACHE_ENV)

    @staticmethod
    def _sweep_stale_temps(folder: Path) -> None:
        """Remove temporaries a killed writer left behind (untouched for an hour)."""
        cutoff = time.time() - _STALE_TEMP_S
        try:
            temps = [p for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIXES)]
        except OSError:
            return
        for p in temps:
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    log.info("removed stale cache temporary %s", p)
            except OSError:
                continue
