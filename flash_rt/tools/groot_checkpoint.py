"""Write a random, well-conditioned GR00T N1.7 checkpoint in the released layout.

Sharded ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json`` with the
released key names (plus the tied LM head the releases carry), ``config.json``
(``Gr00tN1d7Config`` keys), ``processor_config.json`` / ``statistics.json`` /
``embodiment_id.json`` for one embodiment, and a small Qwen-format ``tokenizer.json`` with
the model's special-token ids. Weights are streamed shard by shard: a full-size FP32
checkpoint is 13+ GB and is never held in memory.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from flash_rt.configs.groot import GrootConfig, load_groot_config
from flash_rt.core.checkpoint import META_MODEL, META_PRESET, expected_layout
from flash_rt.core.progress import ProgressBar
from flash_rt.core.safetensors_stream import TensorEntry, dtype_name, write_streaming
from flash_rt.core.sharded import shard_name, write_index
from flash_rt.models.groot.checkpoint import (CONFIG_FILE, EMBODIMENT_ID_FILE, MODEL_TYPE,
                                              PROCESSOR_CONFIG_FILE, STATISTICS_FILE,
                                              TOKENIZER_FILE)
from flash_rt.models.groot.reference import unused_keys
from flash_rt.processing.bpe import write_tokenizer_json
from flash_rt.processing.tokenizer import tiny_corpus
from flash_rt.tools.make_checkpoint import tensor_maker

log = logging.getLogger("flash_rt.make_checkpoint")

DEFAULT_EMBODIMENT = "new_embodiment"  # Isaac-GR00T's tag for a fine-tuned robot (id 10)
DEFAULT_EMBODIMENT_ID = 1  # inside every preset's projector table
VIEW_KEYS = ("front", "wrist")
LANGUAGE_KEY = "annotation.human.task_description"
SHARD_BYTES = 4 << 30  # roughly the size of the released shards
TOKENIZER_MERGES = 200
# The chat-turn markers of Qwen's tokenizer (the vision ids come from the config).
QWEN_CHAT_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
TINY_CHAT_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}


def init_std_and_mean(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(std, mean) of the normal that initialises ``key``: unit-gain linears, norm gains
    near 1 (Qwen's RMSNorm and every LayerNorm multiply by w), nothing left at zero."""
    if key.endswith((".W", "W1.W", "W2.W", "W3.W")):  # per-embodiment (E, in, out)
        return shape[1] ** -0.5, 0.0
    if key.endswith(".b") or key.endswith("bias"):
        return 0.02, 0.0
    if ("norm" in key and ".norm1.linear." not in key) or key.startswith("action_head.vlln"):
        return 0.05, 1.0
    if key.endswith("embed_tokens.weight"):
        return 1.0, 0.0
    if key.endswith("pos_embed.weight") or key.endswith("position_embedding.weight"):
        return 0.5, 0.0
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return fan_in ** -0.5, 0.0


def groot_tensor(key: str, shape: tuple[int, ...], seed: int):
    return tensor_maker(key, shape, seed, init=init_std_and_mean)


def _shards(layout: dict[str, tuple[int, ...]], dtype: torch.dtype,
            shard_bytes: int) -> list[list[str]]:
    size = torch.empty((), dtype=dtype).element_size()
    shards, current, used = [], [], 0
    for key, shape in layout.items():
        nbytes = int(np.prod(shape)) * size
        if current and used + nbytes > shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(key)
        used += nbytes
    return shards + [current]


def write_weights(cfg: GrootConfig, out: Path, seed: int, dtype: torch.dtype,
                  shard_bytes: int) -> None:
    layout = {**expected_layout(cfg), **unused_keys(cfg)}
    size = torch.empty((), dtype=dtype).element_size()
    total = sum(int(np.prod(s)) for s in layout.values()) * size
    shards = _shards(layout, dtype, min(shard_bytes, total // 2 + 1))  # always sharded
    bar = ProgressBar("writing weights", len(layout))
    weight_map, done = {}, 0
    for i, keys in enumerate(shards):
        name = shard_name(i, len(shards))
        start = done

        def progress(n, _total, start=start):
            bar.update(start + n, len(layout))

        write_streaming(out / name, [TensorEntry(k, layout[k], groot_tensor(k, layout[k], seed))
                                     for k in keys], dtype=dtype,
                        metadata={"format": "pt", META_MODEL: cfg.model, META_PRESET: cfg.preset},
                        progress=progress)
        weight_map.update({k: name for k in keys})
        done += len(keys)
    bar.close()
    write_index(out, weight_map, total)


def config_json(cfg: GrootConfig, dtype: torch.dtype) -> dict:
    """Gr00tN1d7Config's shape-fixing keys (names as in gr00t/configs/model/gr00t_n1d7.py)."""
    d, s = cfg.dit, cfg.vl_self_attention
    return {
        "model_type": MODEL_TYPE, "architectures": ["Gr00tN1d7"],
        "model_dtype": "bfloat16" if dtype == torch.bfloat16 else "float32",
        "model_name": "nvidia/Cosmos-Reason2-2B", "backbone_model_type": "qwen",
        "select_layer": cfg.text.num_layers,
        "backbone_embedding_dim": cfg.backbone_embedding_dim, "hidden_size": cfg.hidden_size,
        "input_embedding_dim": cfg.input_embedding_dim, "max_state_dim": cfg.max_state_dim,
        "max_action_dim": cfg.max_action_dim, "action_horizon": cfg.action_horizon,
        "state_history_length": cfg.state_history_length,
        "max_num_embodiments": cfg.max_num_embodiments, "max_seq_len": cfg.max_seq_len,
        "num_inference_timesteps": cfg.num_inference_timesteps,
        "num_timestep_buckets": cfg.num_timestep_buckets,
        "attend_text_every_n_blocks": cfg.attend_text_every_n_blocks,
        "add_pos_embed": cfg.add_pos_embed, "use_vlln": cfg.use_vlln,
        "use_alternate_vl_dit": cfg.use_alternate_vl_dit,
        "diffusion_model_cfg": {"positional_embeddings": None, "num_layers": d.num_layers,
                                "num_attention_heads": d.num_heads,
                                "attention_head_dim": d.head_dim, "norm_type": "ada_norm",
                                "dropout": 0.2, "final_dropout": True,
                                "output_dim": d.output_dim,
                                "interleave_self_attention": d.interleave_self_attention},
        "vl_self_attention_cfg": {"positional_embeddings": None, "num_layers": s.num_layers,
                                  "num_attention_heads": s.num_heads,
                                  "attention_head_dim": s.head_dim, "dropout": 0.2,
                                  "final_dropout": True},
        "image_crop_size": list(cfg.image.image_crop_size),
        "image_target_size": list(cfg.image.image_target_size),
        "shortest_image_edge": cfg.image.shortest_image_edge,
        "crop_fraction": cfg.image.crop_fraction,
        "use_percentiles": True, "use_relative_action": False,
    }


def _group_stats(rng: np.random.Generator, dims: int) -> dict:
    mean = rng.normal(0.0, 0.5, dims)
    std = rng.uniform(0.2, 1.0, dims)
    return {"min": (mean - 3 * std).tolist(), "max": (mean + 3 * std).tolist(),
            "mean": mean.tolist(), "std": std.tolist(),
            "q01": (mean - 2 * std).tolist(), "q99": (mean + 2 * std).tolist()}


def processor_files(cfg: GrootConfig, state_groups: dict[str, int],
                    action_groups: dict[str, int], seed: int) -> dict[str, dict]:
    horizon = min(cfg.action_horizon, max(1, cfg.action_horizon // 2))
    modality = {
        "video": {"delta_indices": [0], "modality_keys": list(VIEW_KEYS)},
        "state": {"delta_indices": [0], "modality_keys": list(state_groups)},
        "action": {"delta_indices": list(range(horizon)), "modality_keys": list(action_groups),
                   "action_configs": [{"rep": "absolute", "type": "non_eef",
                                       "format": "default"} for _ in action_groups]},
        "language": {"delta_indices": [0], "modality_keys": [LANGUAGE_KEY]},
    }
    rng = np.random.default_rng(seed)
    stats = {"state": {k: _group_stats(rng, n) for k, n in state_groups.items()},
             "action": {k: _group_stats(rng, n) for k, n in action_groups.items()}}
    kwargs = {
        "modality_configs": {DEFAULT_EMBODIMENT: modality},
        "image_crop_size": list(cfg.image.image_crop_size),
        "image_target_size": list(cfg.image.image_target_size),
        "use_albumentations": True, "shortest_image_edge": cfg.image.shortest_image_edge,
        "crop_fraction": cfg.image.crop_fraction, "formalize_language": True,
        "model_name": "nvidia/Cosmos-Reason2-2B", "model_type": "qwen",
        "max_state_dim": cfg.max_state_dim, "max_action_dim": cfg.max_action_dim,
        "max_action_horizon": cfg.action_horizon, "use_percentiles": True,
        "clip_outliers": True, "apply_sincos_state_encoding": False,
        "use_relative_action": False,
    }
    return {PROCESSOR_CONFIG_FILE: {"processor_class": "Gr00tN1d7Processor",
                                    "processor_kwargs": kwargs},
            STATISTICS_FILE: {DEFAULT_EMBODIMENT: stats},
            EMBODIMENT_ID_FILE: {DEFAULT_EMBODIMENT: DEFAULT_EMBODIMENT_ID}}


def write_tokenizer(cfg: GrootConfig, path: Path) -> Path:
    """A stand-in for Qwen's tokenizer.json (not downloadable here) with the model's ids."""
    t = cfg.tokens
    chat = QWEN_CHAT_IDS if cfg.preset == "full" else TINY_CHAT_IDS
    specials = {**chat, t.vision_start_token: t.vision_start_token_id,
                t.vision_end_token: t.vision_end_token_id, t.image_token: t.image_token_id}
    return write_tokenizer_json(path, specials, tiny_corpus(), TOKENIZER_MERGES)


def split_dims(total: int) -> dict[str, int]:
    """An arm + gripper grouping of ``total`` dims (the gripper is the last one)."""
    return {"arm": total - 1, "gripper": 1} if total > 1 else {"arm": total}


def make_groot_checkpoint(out: Path, preset: str, seed: int, state_dims: int,
                          action_dims: int, dtype: torch.dtype,
                          shard_bytes: int = SHARD_BYTES) -> Path:
    cfg = load_groot_config(preset)
    if not 1 <= state_dims <= cfg.max_state_dim or not 1 <= action_dims <= cfg.max_action_dim:
        raise ValueError(f"state/action dims must be in [1, {cfg.max_state_dim}] / "
                         f"[1, {cfg.max_action_dim}]")
    dtype_name(dtype)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_weights(cfg, out, seed, dtype, shard_bytes)
    log.info("weights written in %.1f s", time.perf_counter() - start)
    (out / CONFIG_FILE).write_text(json.dumps(config_json(cfg, dtype), indent=2))
    for name, body in processor_files(cfg, split_dims(state_dims), split_dims(action_dims),
                                      seed).items():
        (out / name).write_text(json.dumps(body, indent=2))
    write_tokenizer(cfg, out / TOKENIZER_FILE)
    return out
