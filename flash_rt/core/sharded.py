"""Sharded safetensors (``model-*.safetensors`` + ``model.safetensors.index.json``), streamed.

The Hugging Face layout GR00T releases use: the index's ``weight_map`` names the shard of
every tensor. The reader checks the index against the shards' own headers before any
tensor is read (a key the index lists but its shard lacks, or a shard key the index does
not list, is an error naming it) and then reads one tensor at a time through
:class:`SafetensorsReader`, so nothing is memory-mapped and nothing is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from flash_rt.core.safetensors_stream import SafetensorsReader

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_MAX_LISTED = 10


def shard_name(i: int, count: int) -> str:
    """Hugging Face's shard naming: model-00001-of-00002.safetensors."""
    return f"model-{i + 1:05d}-of-{count:05d}.safetensors"


class ShardedSafetensorsReader:
    """The same read interface as :class:`SafetensorsReader` over a sharded checkpoint (or a
    lone ``model.safetensors`` when there is no index)."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory)
        index = self.path / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{index}: not a safetensors index ({exc})") from exc
            self.index_file: Path | None = index
        elif (self.path / SINGLE_FILE).is_file():
            weight_map = None
            self.index_file = None
        else:
            raise FileNotFoundError(f"{self.path}: neither {INDEX_FILE} nor {SINGLE_FILE}")
        if weight_map is None:
            self.shards = {SINGLE_FILE: SafetensorsReader(self.path / SINGLE_FILE)}
            self._where = {k: SINGLE_FILE for k in self.shards[SINGLE_FILE].keys()}
        else:
            self.shards = {}
            for name in sorted(set(weight_map.values())):
                if Path(name).name != name:
                    raise ValueError(f"{index}: shard {name!r} is not a file in the checkpoint")
                self.shards[name] = SafetensorsReader(self.path / name)
            self._where = dict(weight_map)
            self._check_index(index)
        self.metadata: dict[str, str] = {}
        for reader in self.shards.values():
            self.metadata.update(reader.metadata)

    def _check_index(self, index: Path) -> None:
        problems = []
        for name, reader in self.shards.items():
            listed = {k for k, s in self._where.items() if s == name}
            held = set(reader.keys())
            for kind, keys in (("listed in the index but missing from", listed - held),
                               ("present in but not listed in the index for", held - listed)):
                if keys:
                    more = " ..." if len(keys) > _MAX_LISTED else ""
                    problems.append(f"{len(keys)} keys {kind} {name}: "
                                    + ", ".join(sorted(keys)[:_MAX_LISTED]) + more)
        if problems:
            raise ValueError(f"{index} does not match its shards:\n  " + "\n  ".join(problems))

    def keys(self) -> list[str]:
        """Shard by shard, each in its file's order: the cheapest read order (a
        :class:`~flash_rt.core.checkpoint.WeightSource`'s contract)."""
        return [k for reader in self.shards.values() for k in reader.keys()]

    def _reader(self, key: str) -> SafetensorsReader:
        return self.shards[self._where[key]]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._reader(key).shape(key)

    def dtype(self, key: str) -> torch.dtype:
        return self._reader(key).dtype(key)

    def get(self, key: str) -> torch.Tensor:
        return self._reader(key).get(key)

    def content_id(self) -> str:
        """Short id of the checkpoint (index + every shard header + sizes): cheap."""
        h = hashlib.sha256()
        if self.index_file is not None:
            h.update(self.index_file.read_bytes())
        for name, reader in sorted(self.shards.items()):
            with open(reader.path, "rb") as fh:
                h.update(fh.read(reader.data_start))
            h.update(str(reader.path.stat().st_size).encode())
        return h.hexdigest()[:16]


def write_index(directory: Path, weight_map: dict[str, str], total_size: int) -> Path:
    """``model.safetensors.index.json`` in Hugging Face's layout."""
    path = directory / INDEX_FILE
    path.write_text(json.dumps({"metadata": {"total_size": total_size},
                                "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    return path
