"""Checkpoint layout and streamed loading of LeRobot / openpi-PyTorch ``model.safetensors``.

The reference module *is* the declarative layout: its parameter names are the canonical
checkpoint keys (no ``model.`` prefix) and its shapes are the expected shapes, so the
layout cannot drift from the model. Key aliases accepted on load:
- a leading ``model.`` (LeRobot) or none (openpi-converted);
- the tied ``paligemma.lm_head.weight`` in place of ``embed_tokens.weight``.

Loading reads from a :class:`WeightSource`: the safetensors reader here, or another
checkpoint format presenting its tensors under the canonical keys (openpi's Orbax params,
``frontends/jax``), so every frontend builds the same model from either.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch
from torch import nn

from flash_rt.configs import ModelConfig, available_presets, load_config
from flash_rt.core.content_hash import file_content_hash
from flash_rt.core.files import regular_file
from flash_rt.core.safetensors_stream import SafetensorsReader
from flash_rt.models import reference_class

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
NORM_STATS_FILE = "norm_stats.json"
TOKENIZER_FILE = "tokenizer.model"
META_MODEL = "flash_rt.model"
META_PRESET = "flash_rt.preset"
# What asset_id means, for the formats that refuse it.
ASSET_ID_IS_OPENPI = ("asset_id picks the norm stats of an openpi checkpoint (framework='jax', "
                      "Pi0/Pi0.5)")

LEROBOT_PREFIX = "model."  # LeRobot keys carry it; openpi-converted files do not
# Canonical key prefixes of the towers (the reference module's structure), for the specs
# that map checkpoint keys onto other layouts.
VISION_KEYS = "paligemma_with_expert.paligemma.model.vision_tower.vision_model"
PROJECTOR_KEYS = "paligemma_with_expert.paligemma.model.multi_modal_projector.linear"
PREFIX_LM_KEYS = "paligemma_with_expert.paligemma.model.language_model"
EXPERT_KEYS = "paligemma_with_expert.gemma_expert.model"
_EMBED_KEY = f"{PREFIX_LM_KEYS}.embed_tokens.weight"
_TIED_LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
# Present in some exports, never used for inference.
_UNUSED_KEYS = frozenset({"paligemma_with_expert.gemma_expert.lm_head.weight"})


class CheckpointError(ValueError):
    """A checkpoint that cannot become the model's weights (layout mismatch, unreadable
    data); the message names the keys, leaves or files."""


class WeightSource(Protocol):
    """Named tensors read one at a time. ``keys()`` is also the cheapest read order."""

    path: Path  # named in error messages

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def dtype(self, key: str) -> torch.dtype: ...

    def get(self, key: str) -> torch.Tensor: ...


def build_empty_reference(cfg: ModelConfig) -> nn.Module:
    """The reference module with unallocated (meta) parameters, ready for streamed assignment."""
    with torch.device("meta"):
        return reference_class(cfg.model)(cfg)


def expected_layout(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical key -> shape for ``cfg`` (computed on the meta device: no memory)."""
    return {k: tuple(v.shape) for k, v in build_empty_reference(cfg).state_dict().items()}


def canonical_key(key: str) -> str:
    if key.startswith(LEROBOT_PREFIX):
        key = key[len(LEROBOT_PREFIX):]
    return _EMBED_KEY if key == _TIED_LM_HEAD else key


@dataclass
class KeyPlan:
    """Which file key provides each canonical key."""

    source: dict[str, str]  # canonical -> key in file


_MAX_LISTED = 20


def _listing(kind: str, names: list[str], noun: str) -> str:
    if not names:
        return ""
    more = " ..." if len(names) > _MAX_LISTED else ""
    return f"{kind} {noun} ({len(names)}): " + ", ".join(names[:_MAX_LISTED]) + more


def mismatch_error(where: str, missing: list[str], unexpected: list[str],
                   other: list[str], noun: str = "keys") -> Optional[CheckpointError]:
    """One error naming every missing, unexpected and otherwise wrong entry (or None)."""
    problems = [_listing("missing", missing, noun), _listing("unexpected", unexpected, noun)]
    problems = [p for p in problems + other if p]
    if not problems:
        return None
    return CheckpointError(f"{where} does not match the layout:\n  " + "\n  ".join(problems))


def plan_keys(reader: WeightSource, layout: dict[str, tuple[int, ...]],
              canonical: Callable[[str], str] = canonical_key,
              optional: Optional[dict[str, tuple[int, ...]]] = None) -> KeyPlan:
    """Match file keys to the layout; raise one error naming every problem.

    ``canonical`` maps a file key to its layout name (the Pi aliases by default);
    ``optional`` lists keys a file may carry that are never loaded (shape-checked).
    The plan lists the keys in the reader's order (its cheapest).
    """
    source: dict[str, str] = {}
    unexpected, shape_errors = [], []
    optional = optional or {}
    for key in reader.keys():
        canon = canonical(key)
        if canon in _UNUSED_KEYS:
            continue
        if canon in optional:
            if reader.shape(key) != optional[canon]:
                shape_errors.append(f"{key}: checkpoint shape {reader.shape(key)}, model "
                                    f"expects {optional[canon]}")
            continue
        if canon not in layout:
            unexpected.append(key)
            continue
        got = reader.shape(key)
        if got != layout[canon]:
            shape_errors.append(f"{key}: checkpoint shape {got}, model expects {layout[canon]}")
        if canon in source:
            if canon != _EMBED_KEY:
                raise CheckpointError(f"{reader.path}: keys {source[canon]!r} and {key!r} both "
                                      f"map to {canon!r}")
            if key.endswith("lm_head.weight"):
                continue  # embed_tokens and the tied lm_head both present: keep embed_tokens
        source[canon] = key
    error = mismatch_error(str(reader.path), sorted(set(layout) - set(source)), unexpected,
                           shape_errors)
    if error:
        raise error
    return KeyPlan(source=source)


def _assign(module: nn.Module, key: str, tensor: torch.Tensor) -> None:
    parent_name, _, leaf = key.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, leaf, nn.Parameter(tensor, requires_grad=False))


def detect_preset(reader: SafetensorsReader, model: str) -> str:
    """The generator records its preset in the metadata; real exports are matched by shape."""
    meta_model = reader.metadata.get(META_MODEL)
    if meta_model is not None and meta_model != model:
        raise CheckpointError(f"{reader.path} holds a {meta_model!r} model, not {model!r}")
    if META_PRESET in reader.metadata:
        return reader.metadata[META_PRESET]
    for preset in available_presets(model):
        layout = expected_layout(load_config(model, preset))
        try:
            plan_keys(reader, layout)
            return preset
        except CheckpointError:
            continue
    return "full"  # let the full layout's error message name what is wrong


def load_reference_weights(model: nn.Module, reader: WeightSource,
                           progress: Optional[Callable[[int, int], None]] = None,
                           plan: Optional[KeyPlan] = None) -> nn.Module:
    """Stream tensors from ``reader`` into a meta-initialised reference, casting to FP32.

    ``plan`` (default: the Pi key rules against the model's own layout) says which source
    key fills which parameter. Tensors are read in the reader's order (its cheapest), so
    only what the reader holds for the next tensors is alive beside the model.
    """
    if plan is None:
        plan = plan_keys(reader, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    start = time.perf_counter()
    total = len(plan.source)
    for i, (canon, key) in enumerate(plan.source.items()):
        tensor = reader.get(key)
        _assign(model, canon, tensor if tensor.dtype == torch.float32 else tensor.float())
        if progress:
            progress(i + 1, total)
    log.info("loaded %d tensors from %s in %.1f s", total, reader.path,
             time.perf_counter() - start)
    return model.eval()


def weights_path(checkpoint: str | Path) -> Path:
    path = Path(checkpoint)
    return path / WEIGHTS_FILE if path.is_dir() else path


@dataclass
class CheckpointBundle:
    """A checkpoint directory resolved into its parts and the config it implies."""

    directory: Path
    reader: WeightSource
    config: ModelConfig
    norm_stats: Path
    tokenizer: Optional[Path]

    @property
    def checkpoint_id(self) -> str:
        """Short content id (header + size), cheap even for a 13 GB file."""
        h = hashlib.sha256()
        with open(self.reader.path, "rb") as fh:
            h.update(fh.read(self.reader.data_start))
        h.update(str(self.reader.path.stat().st_size).encode())
        return h.hexdigest()[:16]

    def content_hash(self, memo_dir: Optional[Path | str] = None) -> str:
        """sha256 hex of the whole weights file (the WeightCache's ``checkpoint_hash``).

        Reads all of a 13.4 GB file unless ``memo_dir`` holds a memo for this version of it
        (pass the cache directory, e.g. ``WeightCache().directory``); see content_hash.py.
        """
        return file_content_hash(self.reader.path, memo_dir)


def open_checkpoint(checkpoint: str | Path, model: str, preset: Optional[str] = None,
                    tokenizer: Optional[str | Path] = None, asset_id: Optional[str] = None,
                    **overrides) -> CheckpointBundle:
    """Locate weights / norm stats / tokenizer and build the config (preset + overrides).

    The signature is the Pi family's checkpoint-format contract (``PolicyFrontend.
    open_bundle``); ``asset_id`` only means something to openpi's format and is refused here.
    """
    if asset_id is not None:
        raise ValueError(f"{ASSET_ID_IS_OPENPI}; a model.safetensors checkpoint has one "
                         f"{NORM_STATS_FILE}")
    directory = checkpoint_directory(checkpoint)
    reader = SafetensorsReader(directory / WEIGHTS_FILE)
    preset = preset or detect_preset(reader, model)
    config = load_config(model, preset, **overrides)
    norm_stats = regular_file(directory / NORM_STATS_FILE, "norm stats (the dataset's "
                              "normalisation statistics, openpi norm_stats.json)")
    return CheckpointBundle(directory, reader, config, norm_stats,
                            resolve_tokenizer(directory, tokenizer))


def checkpoint_directory(checkpoint: str | Path) -> Path:
    directory = Path(checkpoint)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    return directory


def resolve_tokenizer(directory: Path, tokenizer: Optional[str | Path],
                      name: str = TOKENIZER_FILE) -> Optional[Path]:
    """The given tokenizer file (which must be a regular file), else ``<directory>/<name>``
    if anything is there (``tokenizer.model`` for Pi, GR00T's ``tokenizer.json``; a FIFO,
    directory or broken link there is an error naming it), else None (callers then pass
    token ids)."""
    if tokenizer is not None:
        return regular_file(tokenizer, "tokenizer")
    candidate = directory / name
    present = candidate.exists() or candidate.is_symlink()
    return regular_file(candidate, "tokenizer") if present else None
