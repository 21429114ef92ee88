"""openpi's Orbax params presented as the canonical checkpoint tensors, leaf by leaf.

:class:`OpenpiWeights` is a :class:`~flash_rt.core.checkpoint.WeightSource`: the cpu
reference and the GPU weight specs read it exactly as they read ``model.safetensors``.

Memory: openpi stacks every layer of a tower into one leaf (the largest, the prefix's
``gating_einsum``, is 4.8 GB in FP32) and Orbax may store a leaf as one compressed chunk,
so a leaf is read whole, once, and kept only until each of its canonical tensors has been
handed out. ``keys()`` orders the tensors leaf by leaf, largest leaf first: a reader that
follows it (the cpu reference) holds the model plus one leaf, and since every later leaf
is smaller than the model still to come, its peak stays near the model's own size.
Readers in another order (the GPU specs go layer by layer) hold the leaves they have
started, at most the whole checkpoint once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flash_rt.configs import MODELS, ModelConfig
from flash_rt.core.checkpoint import CheckpointError, mismatch_error
from flash_rt.core.orbax_stream import LEAF_SEP, LeafInfo, OrbaxReader
from flash_rt.frontends.jax._openpi_spec import Slice, build_openpi_spec, matching_preset

PARAMS_ITEM = "params"  # openpi saves the Orbax item {"params": tree}
NNX_VALUE = "value"  # trailing key of every leaf of a tree saved from an nnx training state
_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _to_torch(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":  # ml_dtypes: same bits as torch.bfloat16
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class OpenpiParams:
    """The ``params/`` tree of an openpi checkpoint: leaf path (as in openpi's code, e.g.
    ``PaliGemma/llm/layers/mlp/gating_einsum``) -> Orbax leaf."""

    def __init__(self, params_dir: Path):
        self.reader = OrbaxReader(params_dir)
        self.path = params_dir
        leaves = self.reader.leaves
        if leaves and all(p.endswith(LEAF_SEP + NNX_VALUE) for p in leaves):
            leaves = {p[:-len(LEAF_SEP + NNX_VALUE)]: info for p, info in leaves.items()}
        top = PARAMS_ITEM + LEAF_SEP
        outside = sorted(p for p in leaves if not p.startswith(top))
        if outside or not leaves:
            raise CheckpointError(f"{params_dir}: not openpi params (expected every leaf under "
                                  f"{PARAMS_ITEM!r}; found {outside[:5] or 'no leaves'})")
        self.leaves: dict[str, LeafInfo] = {p[len(top):]: info for p, info in leaves.items()}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {p: info.shape for p, info in self.leaves.items()}

    def detect_preset(self, model: str) -> str:
        """The preset whose openpi tree this is; a tree of the other model is an error, and
        no match gives "full" (whose check then names every wrong leaf)."""
        preset = matching_preset(self.shapes, model)
        if preset:
            return preset
        for other in MODELS:
            if other != model and matching_preset(self.shapes, other):
                raise CheckpointError(f"{self.path} holds openpi {other!r} params, not {model!r}")
        return "full"

    def read(self, path: str) -> torch.Tensor:
        return _to_torch(self.reader.read(self.leaves[path].path))


class OpenpiWeights:
    """The canonical tensors of ``params`` for ``cfg``; the tree is checked up front."""

    def __init__(self, params: OpenpiParams, cfg: ModelConfig):
        self.params = params
        self.path = params.path
        spec = build_openpi_spec(cfg)
        _check_tree(params, spec.tree, cfg)
        by_size = sorted(spec.tree, key=lambda p: -params.leaves[p].nbytes)
        rank = {leaf: n for n, leaf in enumerate(by_size)}
        slices = sorted(spec.slices, key=lambda s: (rank[s.leaf], s.index))
        self._slices: dict[str, Slice] = {s.key: s for s in slices}
        self._pending: dict[str, set[str]] = {leaf: set() for leaf in spec.tree}
        for s in slices:
            self._pending[s.leaf].add(s.key)
        self._held: dict[str, torch.Tensor] = {}

    def keys(self) -> list[str]:
        return list(self._slices)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._slices[key].shape

    def dtype(self, key: str) -> torch.dtype:
        return _FLOAT_DTYPES[self.params.leaves[self._slices[key].leaf].dtype.name]

    def get(self, key: str) -> torch.Tensor:
        """Canonical tensor ``key`` (contiguous, the leaf's dtype). Its leaf is read on first
        use and released once every tensor of it has been handed out."""
        s = self._slices[key]
        leaf = self._held.get(s.leaf)
        if leaf is None:
            leaf = self.params.read(s.leaf)
        tensor = s.take(leaf)
        pending = self._pending[s.leaf]
        pending.discard(key)
        if pending:
            self._held[s.leaf] = leaf
        else:
            self._held.pop(s.leaf, None)
        return tensor


def _check_tree(params: OpenpiParams, want: dict[str, tuple[int, ...]], cfg: ModelConfig) -> None:
    """One error naming every missing, unexpected, mis-shaped or non-float leaf."""
    have = params.leaves
    wrong = [f"{p}: checkpoint shape {have[p].shape}, model expects {want[p]}"
             for p in sorted(set(want) & set(have)) if have[p].shape != want[p]]
    wrong += [f"{p}: dtype {info.dtype.name} is not a float type {sorted(_FLOAT_DTYPES)}"
              for p, info in sorted(have.items()) if info.dtype.name not in _FLOAT_DTYPES]
    error = mismatch_error(f"{params.path} (openpi {cfg.model} {cfg.preset} params)",
                           sorted(set(want) - set(have)), sorted(set(have) - set(want)), wrong,
                           noun="leaves")
    if error:
        raise error
