"""Tensor-at-a-time safetensors writing and reading.

A full-size FP32 Pi0.5 is 13.4 GB, so neither side may hold the whole model twice:
the writer lays out the header from shapes alone and then streams each tensor as it is
produced; the reader reads one tensor at a time with ``readinto`` (no mmap, and
safetensors never unpickles).

Dtypes use the safetensors spec names. Those without a numpy equivalent (bf16, fp8) are
moved as raw bytes through a same-size integer view, so every dtype round-trips bit-exact.
"""
from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from flash_rt.core.atomic_io import replacing
from flash_rt.core.files import regular_file

_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
_DTYPES_BY_NAME = {v: k for k, v in _DTYPE_NAMES.items()}
# Same-size integer stand-ins for the dtypes numpy cannot hold.
_RAW_VIEW = {torch.bfloat16: torch.int16, torch.float8_e4m3fn: torch.uint8,
             torch.float8_e5m2: torch.uint8}
_HEADER_ALIGN = 8
_MAX_HEADER = 100 * 1024 * 1024  # the format's own cap on header size


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    make: Callable[[], torch.Tensor]  # produces the tensor when its turn comes
    dtype: torch.dtype | None = None  # stored dtype; None: the writer's ``dtype`` argument


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of ``dtype``; ValueError for a dtype the format cannot hold here."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype} is not supported (supported: "
                         f"{', '.join(sorted(_DTYPES_BY_NAME))})") from None


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def _byte_view(t: torch.Tensor) -> np.ndarray:
    """A flat uint8 numpy view sharing ``t``'s (contiguous, CPU) memory."""
    return t.view(_RAW_VIEW.get(t.dtype, t.dtype)).numpy().reshape(-1).view(np.uint8)


def write_streaming(path: str | os.PathLike, entries: Iterable[TensorEntry],
                    dtype: torch.dtype = torch.float32,
                    metadata: dict[str, str] | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    hasher: Any = None) -> None:
    """Write a safetensors file whose tensors are produced one by one.

    Each tensor is cast to its entry's dtype (default ``dtype``). The file is written under
    a unique temporary name (``<name>.<pid>.<random>.partial``) and renamed, so a crash never
    leaves a truncated ``model.safetensors`` behind and concurrent writers never share a
    temporary file. ``hasher`` (e.g. ``hashlib.sha256()``), if given, is fed every byte
    written, header included, in file order.
    """
    entries = list(entries)
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for e in entries:
        if e.name in header:
            raise ValueError(f"tensor name {e.name!r} is repeated or reserved")
        edtype = e.dtype or dtype
        size = _nbytes(e.shape, edtype)
        header[e.name] = {"dtype": dtype_name(edtype), "shape": list(e.shape),
                          "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % _HEADER_ALIGN)
    blob = struct.pack("<Q", len(blob)) + blob
    with replacing(path, ".partial") as tmp, open(tmp, "xb") as fh:
        fh.write(blob)
        if hasher is not None:
            hasher.update(blob)
        for i, e in enumerate(entries):
            t = e.make()
            if tuple(t.shape) != tuple(e.shape):
                raise ValueError(f"{e.name}: produced shape {tuple(t.shape)} != declared "
                                 f"{e.shape}")
            raw = _byte_view(t.detach().to("cpu", e.dtype or dtype).contiguous())
            fh.write(raw)
            if hasher is not None:
                hasher.update(raw)
            if progress:
                progress(i + 1, len(entries))


class SafetensorsReader:
    """Keys, shapes, metadata and tensor-at-a-time reads of one safetensors file.

    Tensors are read with plain ``readinto`` into a fresh tensor (no mmap), so the process
    holds exactly the tensors the caller keeps, and the header is validated against the
    file up front (the tensors must tile the data section exactly: no gap, no overlap, no
    trailing bytes) so a truncated or damaged download fails before any weight is used.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = regular_file(path, "checkpoint file")
        file_size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{self.path}: too short for a safetensors header ({file_size} B)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(file_size - 8, _MAX_HEADER):
                raise ValueError(f"{self.path}: header length {header_len} exceeds file size "
                                 f"{file_size}: not safetensors or truncated")
            try:
                header = json.loads(fh.read(header_len))
            except ValueError as exc:
                raise ValueError(f"{self.path}: unreadable safetensors header ({exc})") from exc
        self.metadata: dict[str, str] = dict(header.pop("__metadata__", None) or {})
        self.data_start = 8 + header_len
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, info in header.items():
            dtype = _DTYPES_BY_NAME.get(info.get("dtype"))
            if dtype is None:
                raise ValueError(f"{self.path}: tensor {key!r} has unsupported dtype "
                                 f"{info.get('dtype')!r}")
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            if end - begin != _nbytes(shape, dtype) or self.data_start + end > file_size:
                raise ValueError(f"{self.path}: tensor {key!r} at bytes [{begin}, {end}) does not "
                                 f"fit shape {shape} / file size {file_size} (truncated file?)")
            self._entries[key] = (dtype, shape, begin, end)
        self._check_tiling(file_size - self.data_start)

    def _check_tiling(self, data_size: int) -> None:
        """The tensors must cover the data section exactly, as the format requires: a gap,
        an overlap or bytes after the last tensor mean a damaged or foreign file."""
        offset = 0
        for key, (_, _, begin, end) in sorted(self._entries.items(), key=lambda e: e[1][2]):
            if begin != offset:
                raise ValueError(f"{self.path}: tensor {key!r} starts at byte {begin}, "
                                 f"expected {offset} (gap or overlap in the data section)")
            offset = end
        if offset != data_size:
            raise ValueError(f"{self.path}: {data_size - offset} trailing bytes after the last "
                             "tensor (damaged file, or not safetensors)")

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> torch.dtype:
        return self._entries[key][0]

    def _read(self, fh, key: str) -> tuple[torch.Tensor, np.ndarray]:
        """The tensor ``key`` read from ``fh``'s current position, and its byte view."""
        dtype, shape, begin, end = self._entries[key]
        out = torch.empty(shape, dtype=dtype)
        raw = _byte_view(out)
        got = fh.readinto(raw)
        if got != end - begin:
            raise ValueError(f"{self.path}: short read for {key!r} ({got} of {end - begin} B)")
        return out, raw

    def get(self, key: str) -> torch.Tensor:
        with open(self.path, "rb") as fh:
            fh.seek(self.data_start + self._entries[key][2])
            return self._read(fh, key)[0]

    def iter_tensors(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for k in keys:
            yield k, self.get(k)

    def iter_file(self, hasher: Any = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor in file order, in one sequential pass over one open file.

        The reader checked at open that the tensors tile the data section exactly; bytes
        that appeared after the last tensor since then raise ValueError. ``hasher``, if given, is fed every byte of the file in
        order, header included, so once the last tensor is out it holds the file's hash.
        Each tensor is hashed on a helper thread while the next one is read, and is yielded
        only once hashed.
        """
        order = sorted(self._entries, key=lambda k: self._entries[k][2])
        update = hasher.update if hasher is not None else (lambda _: None)
        with open(self.path, "rb") as fh, ThreadPoolExecutor(max_workers=1) as pool:
            hashing = pool.submit(update, fh.read(self.data_start))
            ready = None
            for key in order:
                tensor, raw = self._read(fh, key)
                hashing.result()
                hashing = pool.submit(update, raw)
                if ready is not None:
                    yield ready
                ready = (key, tensor)
            if fh.read(1):
                raise ValueError(f"{self.path}: trailing bytes after the last tensor (the file "
                                 "grew since it was opened)")
            hashing.result()
            if ready is not None:
                yield ready
