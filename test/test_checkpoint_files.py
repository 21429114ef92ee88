"""Damaged or odd checkpoint files are refused with the path and the real cause."""
from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from flash_rt.core.checkpoint import NORM_STATS_FILE, TOKENIZER_FILE, WEIGHTS_FILE, open_checkpoint
from flash_rt.core.files import regular_file
from flash_rt.core.safetensors_stream import SafetensorsReader
from flash_rt.processing.normalize import NormStats, Normalizer


def _make(path, kind: str):
    """Put something that is not a regular file at ``path``."""
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink_loop":
        os.symlink(path.name, path)  # points at itself
    elif kind == "dangling_symlink":
        os.symlink(path.parent / "nowhere", path)


CAUSES = {"directory": "is a directory", "fifo": "is a FIFO",
          "symlink_loop": "is a symlink loop", "dangling_symlink": "which does not exist"}


@pytest.mark.parametrize("kind", list(CAUSES))
@pytest.mark.parametrize("name", [WEIGHTS_FILE, NORM_STATS_FILE, TOKENIZER_FILE])
def test_checkpoint_file_that_is_not_a_file_names_path_and_cause(tiny_pi05_ckpt, tmp_path,
                                                                 kind, name):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_pi05_ckpt, ckpt)
    (ckpt / name).unlink()
    _make(ckpt / name, kind)
    with pytest.raises(OSError) as err:  # never blocks on the FIFO
        open_checkpoint(ckpt, "pi05")
    assert str(ckpt / name) in str(err.value) and CAUSES[kind] in str(err.value), err.value


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights not found: .*/absent"):
        regular_file(tmp_path / "absent", "weights")


def _stats(state=None):
    feature = {"mean": [0.0, 0.0], "std": [1.0, 1.0], "q01": [-1.0, -1.0], "q99": [1.0, 1.0]}
    return {"norm_stats": {"state": state or feature, "actions": feature}}


@pytest.mark.parametrize("text,why", [
    ("{not json", "not valid JSON"),
    ("\xff\xfe", "not valid JSON"),
    (json.dumps(_stats({"mean": ["a", 1], "std": [1, 1]})), "expected a list of numbers"),
    (json.dumps(_stats({"mean": [0, 0], "std": [1, -1]})), "std: negative at dims [1]"),
    (json.dumps(_stats({"mean": [0, 0], "std": [1, 1], "q01": [0, 2], "q99": [1, 1]})),
     "q99 < q01 at dims [1]"),
])
def test_malformed_norm_stats_name_the_file(tmp_path, text, why):
    path = tmp_path / NORM_STATS_FILE
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        NormStats.load(path)
    assert str(path) in str(err.value) and why in str(err.value), err.value


@pytest.mark.parametrize("method", ["quantile", "mean_std"])
def test_zero_range_norm_stats_are_reported(tmp_path, caplog, method):
    path = tmp_path / NORM_STATS_FILE
    path.write_text(json.dumps(_stats({"mean": [0, 3], "std": [1, 0], "q01": [0, 3],
                                       "q99": [1, 3]})))
    config = type("Config", (), {"normalization": method, "action_dim": 32})
    with caplog.at_level(logging.WARNING, logger="flash_rt.processing.normalize"):
        Normalizer(NormStats.load(path), config)
    assert f"{path}: norm_stats.state: state dims [1] have a zero range" in caplog.text


def test_safetensors_with_trailing_bytes_is_refused_at_open(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": torch.ones(3)}, str(path))
    SafetensorsReader(path)  # intact: opens
    with open(path, "ab") as fh:
        fh.write(b"\0" * 8)
    with pytest.raises(ValueError, match="8 trailing bytes after the last tensor"):
        SafetensorsReader(path)
