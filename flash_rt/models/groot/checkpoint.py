"""The released GR00T N1.7 checkpoint directory: files, config, strict key plan.

Layout (Hugging Face ``nvidia/GR00T-N1.7-3B`` and its fine-tunes, as Isaac-GR00T
n1.7-release saves it): sharded ``model-*.safetensors`` + ``model.safetensors.index.json``
with keys under ``backbone.model.model.`` and ``action_head.``; ``config.json``
(``Gr00tN1d7Config``); the processor files ``processor_config.json``, ``statistics.json``
and ``embodiment_id.json`` (at the top level or under ``processor/``); optionally the Qwen
``tokenizer.json`` and a ``chat_template.jinja``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from flash_rt.configs.groot import GrootConfig, load_groot_config
from flash_rt.core.checkpoint import (META_MODEL, META_PRESET, CheckpointError, KeyPlan,
                                      checkpoint_directory, expected_layout, plan_keys,
                                      resolve_tokenizer)
from flash_rt.core.sharded import ShardedSafetensorsReader
from flash_rt.models.groot.reference import unused_keys

CONFIG_FILE = "config.json"
PROCESSOR_CONFIG_FILE = "processor_config.json"
STATISTICS_FILE = "statistics.json"
EMBODIMENT_ID_FILE = "embodiment_id.json"
TOKENIZER_FILE = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
PROCESSOR_SUBDIR = "processor"
MODEL_TYPE = "Gr00tN1d7"


def _identity(key: str) -> str:
    return key


def plan_groot_keys(reader: ShardedSafetensorsReader, cfg: GrootConfig) -> KeyPlan:
    """Strict: every reference parameter present with its shape, nothing unknown (the unused
    tied LM head may be there or not). The error names every offending key."""
    return plan_keys(reader, expected_layout(cfg), canonical=_identity,
                     optional=unused_keys(cfg))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc


def processor_file(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / PROCESSOR_SUBDIR / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory}: {name} not found (looked in the checkpoint and "
                            f"its {PROCESSOR_SUBDIR}/ folder); GR00T needs it for its "
                            "modality configuration and normalisation")


@dataclass
class GrootBundle:
    """A checkpoint directory resolved into its parts and the config it implies."""

    directory: Path
    reader: ShardedSafetensorsReader
    config: GrootConfig
    processor_kwargs: dict
    statistics: dict
    embodiment_ids: dict
    tokenizer: Optional[Path]
    chat_template: Optional[Path]

    @property
    def checkpoint_id(self) -> str:
        return self.reader.content_id()

    def plan(self) -> KeyPlan:
        return plan_groot_keys(self.reader, self.config)


def _preset(reader: ShardedSafetensorsReader) -> str:
    meta_model = reader.metadata.get(META_MODEL)
    if meta_model is not None and meta_model != "groot":
        raise CheckpointError(f"{reader.path} holds a {meta_model!r} model, not 'groot'")
    return reader.metadata.get(META_PRESET, "full")  # released files carry no preset


def open_groot_checkpoint(checkpoint: str | Path, preset: Optional[str] = None,
                          tokenizer: Optional[str | Path] = None,
                          num_steps: Optional[int] = None) -> GrootBundle:
    directory = checkpoint_directory(checkpoint)
    reader = ShardedSafetensorsReader(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: GR00T reads its action-head sizes "
                                "from the checkpoint's config.json")
    config_json = _read_json(config_path)
    if config_json.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{config_path}: model_type {config_json.get('model_type')!r}, "
                              f"expected {MODEL_TYPE!r}")
    processor_json = _read_json(processor_file(directory, PROCESSOR_CONFIG_FILE))
    kwargs = processor_json.get("processor_kwargs", processor_json)
    cfg = load_groot_config(preset or _preset(reader), config_json=config_json,
                            image_json=kwargs, num_steps=num_steps)
    template = directory / CHAT_TEMPLATE_FILE
    try:
        ids = _read_json(processor_file(directory, EMBODIMENT_ID_FILE))
    except FileNotFoundError:
        ids = {}  # older exports: the processor's built-in mapping applies
    return GrootBundle(directory=directory, reader=reader, config=cfg, processor_kwargs=kwargs,
                       statistics=_read_json(processor_file(directory, STATISTICS_FILE)),
                       embodiment_ids=ids,
                       tokenizer=resolve_tokenizer(directory, tokenizer, TOKENIZER_FILE),
                       chat_template=template if template.is_file() else None)
