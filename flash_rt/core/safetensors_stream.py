"""Tensor-at-a-time safetensors writing and reading.

A full-size FP32 Pi0.5 is 13.4 GB, so neither side may hold the whole model twice:
the writer lays out the header from shapes alone and then streams each tensor as it is
produced; the reader memory-maps the file (safetensors never unpickles).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

_DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
_DTYPES_BY_NAME = {v: k for k, v in _DTYPE_NAMES.items()}
_HEADER_ALIGN = 8
_MAX_HEADER = 100 * 1024 * 1024  # the format's own cap on header size


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    make: Callable[[], torch.Tensor]  # produces the tensor when its turn comes


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def write_streaming(path: str | os.PathLike, entries: Iterable[TensorEntry],
                    dtype: torch.dtype = torch.float32,
                    metadata: dict[str, str] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Write a safetensors file whose tensors are produced one by one.

    The file is written under a temporary name and renamed, so a crash never leaves a
    truncated ``model.safetensors`` behind.
    """
    entries = list(entries)
    header: dict = {"__metadata__": dict(metadata or {})}
    offset = 0
    for e in entries:
        size = _nbytes(e.shape, dtype)
        header[e.name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(e.shape),
                          "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % _HEADER_ALIGN)
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for i, e in enumerate(entries):
            t = e.make()
            if tuple(t.shape) != tuple(e.shape):
                raise ValueError(f"{e.name}: produced shape {tuple(t.shape)} != declared {e.shape}")
            t = t.to(dtype).contiguous()
            # bf16 has no numpy dtype: write the raw bytes through an int16 view.
            raw = t.view(torch.int16) if dtype == torch.bfloat16 else t
            fh.write(raw.numpy().tobytes())
            if progress:
                progress(i + 1, len(entries))
    os.replace(tmp, path)


class SafetensorsReader:
    """Keys, shapes, metadata and tensor-at-a-time reads of one safetensors file.

    Tensors are read with plain ``readinto`` into a fresh tensor (no mmap), so the process
    holds exactly the tensors the caller keeps, and the header is validated against the
    file size up front so a truncated download fails before any weight is used.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {self.path}")
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

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> torch.dtype:
        return self._entries[key][0]

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[key]
        out = torch.empty(shape, dtype=dtype)
        raw = out.view(torch.int16) if dtype == torch.bfloat16 else out
        with open(self.path, "rb") as fh:
            fh.seek(self.data_start + begin)
            got = fh.readinto(memoryview(raw.numpy()).cast("B"))
        if got != end - begin:
            raise ValueError(f"{self.path}: short read for {key!r} ({got} of {end - begin} B)")
        return out

    def iter_tensors(self, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        for k in keys:
            yield k, self.get(k)
