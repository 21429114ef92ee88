"""Leaf-at-a-time reading and whole-tree writing of Orbax PyTree checkpoints (OCDBT).

openpi saves its params with Orbax's ``PyTreeCheckpointer``: one zarr array per leaf
inside an OCDBT key-value store. Orbax itself reads the tree (paths, shapes, dtypes) and
builds each leaf's TensorStore spec; TensorStore reads one leaf at a time, so the process
holds only the leaf being converted (Orbax's own restore materialises the whole tree).

Orbax, TensorStore and a CPU jax are the optional ``[jax]`` extra; importing this module
without them is fine, opening a checkpoint says how to install them. jax is pinned to its
CPU backend here (unless the caller chose one): a CUDA jax would otherwise reserve most of
the GPU the engine is about to use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flash_rt.core.checkpoint import CheckpointError

INSTALL_HINT = "pip install 'flash_rt_ros[jax]' (orbax-checkpoint, tensorstore and a CPU jax)"
LEAF_SEP = "/"


class OrbaxUnavailable(ImportError):
    """The ``[jax]`` extra is not installed."""


class OrbaxReadError(CheckpointError):
    """A checkpoint Orbax/TensorStore cannot read; the message names the leaf or file."""


def _orbax():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import orbax.checkpoint as ocp
        import tensorstore as ts
        from orbax.checkpoint import type_handlers
    except ImportError as exc:
        raise OrbaxUnavailable(f"reading Orbax checkpoints needs the jax extra ({exc}): "
                               f"{INSTALL_HINT}") from exc
    return ocp, ts, type_handlers


def require_orbax() -> None:
    """Raise :class:`OrbaxUnavailable` (with the install command) unless the extra is there."""
    _orbax()


@dataclass(frozen=True)
class LeafInfo:
    path: str  # tree path, keys joined by LEAF_SEP
    shape: tuple[int, ...]
    dtype: np.dtype
    name: str  # Orbax's array name inside the store (keys joined by '.')

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _flatten(tree, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    if hasattr(tree, "items") and not hasattr(tree, "shape"):
        out: dict[tuple[str, ...], object] = {}
        for key, sub in tree.items():
            out.update(_flatten(sub, prefix + (str(key),)))
        return out
    return {prefix: tree}


class OrbaxReader:
    """The leaves of one Orbax PyTree checkpoint directory and their one-at-a-time reads."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"Orbax checkpoint directory not found: {self.directory}")
        ocp, ts, th = _orbax()
        self._ts, self._th = ts, th
        try:
            with ocp.PyTreeCheckpointer() as checkpointer:
                meta = checkpointer.metadata(self.directory)
        except Exception as exc:  # orbax raises many types for unreadable metadata
            raise OrbaxReadError(f"{self.directory}: not a readable Orbax checkpoint "
                                 f"({type(exc).__name__}: {exc})") from exc
        meta = getattr(meta, "item_metadata", meta)  # StepMetadata (orbax >= 0.11.x)
        if meta is None:  # orbax only logs a warning when it finds no tree metadata
            raise OrbaxReadError(f"{self.directory}: not a readable Orbax checkpoint (no tree "
                                 "metadata)")
        self._use_zarr3 = bool(getattr(meta, "use_zarr3", False))
        self._use_ocdbt = th.is_ocdbt_checkpoint(self.directory)
        self._context = th.get_ts_context(use_ocdbt=self._use_ocdbt)
        self.leaves: dict[str, LeafInfo] = {}
        for keys, info in _flatten(getattr(meta, "tree", meta)).items():
            shape = getattr(info, "shape", None)
            if shape is None:
                raise OrbaxReadError(f"{self.directory}: leaf {LEAF_SEP.join(keys)!r} is not "
                                     f"an array ({type(info).__name__})")
            path = LEAF_SEP.join(keys)
            self.leaves[path] = LeafInfo(path, tuple(int(d) for d in shape),
                                         np.dtype(info.dtype), str(info.name))

    def read(self, path: str) -> np.ndarray:
        """The whole leaf ``path`` as a numpy array (bfloat16 as ml_dtypes.bfloat16)."""
        leaf = self.leaves[path]
        info = self._th.ParamInfo(name=leaf.name, parent_dir=self.directory,
                                  path=self.directory / leaf.name, use_zarr3=self._use_zarr3,
                                  ts_context=self._context)
        spec = self._th.get_json_tspec_read(info, use_ocdbt=self._use_ocdbt)
        try:
            store = self._ts.open(spec, context=self._context).result()
            array = store.read().result()
        except Exception as exc:  # TensorStore reports I/O and format errors as ValueError
            raise OrbaxReadError(f"{self.directory}: cannot read leaf {path!r} "
                                 f"(truncated or corrupt array data?): {exc}") from exc
        if tuple(array.shape) != leaf.shape or array.dtype != leaf.dtype:
            raise OrbaxReadError(f"{self.directory}: leaf {path!r} read as {array.dtype}"
                                 f"{tuple(array.shape)}, metadata says {leaf.dtype}{leaf.shape}")
        return array


def write_tree(directory: str | os.PathLike, tree: dict) -> None:
    """Save a nested dict of numpy arrays as an Orbax PyTree checkpoint (OCDBT, as openpi's
    ``PyTreeCheckpointer`` saves), replacing ``directory`` if it exists."""
    ocp, _, _ = _orbax()
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(Path(directory).absolute(), tree, force=True)
