"""Write canonical tensors as openpi's Orbax params (``make_checkpoint --format openpi``).

Each leaf of openpi's tree is assembled from its canonical tensors with the inverse of the
reader's slices (exact), so a checkpoint written here and a ``model.safetensors`` written
from the same tensors hold bit-identical weights. Leaves are staged in memory-mapped
scratch files beside the output: a full-size tree (13.4 GB in FP32) is never held in RAM
while Orbax saves it.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from flash_rt.configs import ModelConfig
from flash_rt.core.orbax_stream import LEAF_SEP, require_orbax, write_tree
from flash_rt.frontends.jax._openpi_spec import build_openpi_spec
from flash_rt.frontends.jax._openpi_weights import PARAMS_ITEM



@dataclass(frozen=True)
class _LeafDtype:
    stored: str  # numpy name of the leaf's dtype in the checkpoint
    raw: str  # a same-size dtype numpy and torch both hold (bf16 moves as int16 bits)
    raw_torch: torch.dtype


_LEAF_DTYPES = {torch.float32: _LeafDtype("float32", "float32", torch.float32),
                torch.bfloat16: _LeafDtype("bfloat16", "int16", torch.int16)}


def _nest(tree: dict, path: str, value) -> None:
    *parents, name = path.split(LEAF_SEP)
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[name] = value


def write_openpi_params(cfg: ModelConfig, params_dir: Path,
                        make: Callable[[str, tuple[int, ...]], torch.Tensor],
                        dtype: torch.dtype = torch.float32,
                        progress: Optional[Callable[[int, int], None]] = None) -> None:
    """Save ``{"params": tree}`` to ``params_dir`` (replaced if present); ``make(key, shape)``
    gives the canonical tensor ``key``."""
    if dtype not in _LEAF_DTYPES:
        raise ValueError(f"openpi leaves are written as {sorted(map(str, _LEAF_DTYPES))}, "
                         f"not {dtype}")
    require_orbax()
    import ml_dtypes  # comes with jax: numpy's bfloat16

    leaf_dtype = _LEAF_DTYPES[dtype]
    stored = np.dtype(getattr(ml_dtypes, leaf_dtype.stored, leaf_dtype.stored))
    spec = build_openpi_spec(cfg)
    by_leaf: dict[str, list] = {leaf: [] for leaf in spec.tree}
    for s in spec.slices:
        by_leaf[s.leaf].append(s)
    params_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".openpi-staging-", dir=params_dir.parent) as tmp:
        tree: dict = {}
        for n, (leaf, shape) in enumerate(spec.tree.items()):
            raw = np.memmap(Path(tmp) / str(n), dtype=leaf_dtype.raw, mode="w+", shape=shape)
            target = torch.from_numpy(np.asarray(raw))
            for s in by_leaf[leaf]:
                s.put(target, make(s.key, s.shape).to(dtype).view(leaf_dtype.raw_torch))
            raw.flush()
            _nest(tree, leaf, raw.view(stored))
            if progress:
                progress(n + 1, len(spec.tree))
        write_tree(params_dir, {PARAMS_ITEM: tree})
