"""An openpi checkpoint directory as openpi releases and saves it, and the frontend mixin
that loads it.

Layout (openpi ``training/checkpoints.py``: ``params`` is a PyTreeCheckpointHandler item,
the assets callback writes ``normalize.save(assets/<asset_id>, ...)``)::

    <ckpt>/params/                        Orbax PyTree checkpoint (OCDBT) of {"params": tree}
    <ckpt>/assets/<asset_id>/norm_stats.json
    <ckpt>/tokenizer.model                optional, as for safetensors checkpoints

``asset_id`` may contain slashes (openpi defaults it to the dataset repo id, e.g.
``physical-intelligence/libero``); without one, the only asset with norm stats is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from flash_rt.configs import load_config
from flash_rt.core.checkpoint import (
    NORM_STATS_FILE, CheckpointBundle, checkpoint_directory, resolve_tokenizer,
)
from flash_rt.core.files import regular_file
from flash_rt.core.content_hash import directory_content_hash, directory_fingerprint
from flash_rt.frontends.jax._openpi_weights import OpenpiParams, OpenpiWeights

PARAMS_DIR = "params"
ASSETS_DIR = "assets"


def find_norm_stats(directory: Path, asset_id: Optional[str]) -> Path:
    """``assets/<asset_id>/norm_stats.json``; without ``asset_id`` the only one present."""
    assets = directory / ASSETS_DIR
    found = sorted(p.parent.relative_to(assets).as_posix()
                   for p in assets.rglob(NORM_STATS_FILE)) if assets.is_dir() else []
    if asset_id is None:
        if len(found) > 1:
            raise ValueError(f"{assets} holds norm stats for several assets {found}: choose one "
                             "with asset_id")
        if not found:
            raise FileNotFoundError(f"no {ASSETS_DIR}/<asset_id>/{NORM_STATS_FILE} in "
                                    f"{directory}: the policy needs the dataset's normalisation "
                                    "statistics (openpi saves them with the checkpoint)")
        asset_id = found[0]
    path = assets / asset_id / NORM_STATS_FILE
    if not (path.exists() or path.is_symlink()):
        raise FileNotFoundError(f"{path} not found; assets with norm stats: {found or 'none'}")
    return regular_file(path, "norm stats")  # a FIFO, directory or broken link: named


class OpenpiBundle(CheckpointBundle):
    """A bundle whose weights are openpi's Orbax ``params/`` directory."""

    @property
    def checkpoint_id(self) -> str:
        """Short content id (file listing + Orbax metadata), cheap even for 13 GB."""
        return directory_fingerprint(self.reader.path)

    def content_hash(self, memo_dir: Optional[Path | str] = None) -> str:
        """sha256 over every file of ``params/`` (the WeightCache's ``checkpoint_hash``);
        each file is read once per version of it when ``memo_dir`` is given."""
        return directory_content_hash(self.reader.path, memo_dir)


def open_openpi_checkpoint(checkpoint: str | Path, model: str, preset: Optional[str] = None,
                           tokenizer: Optional[str | Path] = None,
                           asset_id: Optional[str] = None, **overrides) -> OpenpiBundle:
    """Locate params / norm stats / tokenizer, check the tree, build the config."""
    directory = checkpoint_directory(checkpoint)
    params_dir = directory / PARAMS_DIR
    if not params_dir.is_dir():
        raise FileNotFoundError(f"{params_dir} not found: an openpi checkpoint holds its "
                                f"weights in {PARAMS_DIR}/ (Orbax) beside {ASSETS_DIR}/")
    params = OpenpiParams(params_dir)
    config = load_config(model, preset or params.detect_preset(model), **overrides)
    return OpenpiBundle(directory, OpenpiWeights(params, config), config,
                        find_norm_stats(directory, asset_id),
                        resolve_tokenizer(directory, tokenizer))


class OpenpiCheckpointFrontend:
    """Mixin (first base) turning a torch frontend into its ``jax`` twin: the same compute
    path, weights read from an openpi checkpoint instead of ``model.safetensors`` (the
    frontend's checkpoint format, ``PolicyFrontend.open_bundle``)."""

    framework = "jax"
    open_bundle = staticmethod(open_openpi_checkpoint)
