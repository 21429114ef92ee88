"""Write a random but well-conditioned checkpoint in the real LeRobot/openpi layout.

Nothing can be downloaded in CI, so every test builds its model from this: the weights
(streamed: a full-size FP32 Pi0.5 is 13.4 GB and is never held in memory whole), the
norm stats in openpi's layout and a small SentencePiece tokenizer trained on the spot.
Two formats for Pi0.5 / Pi0, holding the same weights for the same seed:

- ``lerobot`` (default): ``model.safetensors`` + ``norm_stats.json``;
- ``openpi``: openpi's JAX checkpoint, ``params/`` (Orbax OCDBT, openpi's param tree) +
  ``assets/<asset_id>/norm_stats.json`` (needs the ``[jax]`` extra).

GR00T N1.7 (``--model groot``) has one layout, the release's (sharded safetensors + its
config / processor files, see ``groot_checkpoint.py``); openpi options are refused for it.

Usage::

    python -m flash_rt.tools.make_checkpoint --model pi05 --preset tiny --out /tmp/ckpt
    python -m flash_rt.tools.make_checkpoint --format openpi --out /tmp/ckpt_openpi
    python -m flash_rt.tools.make_checkpoint --model groot --preset tiny --out /tmp/groot
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from flash_rt.configs import ALL_MODELS, GROOT, ModelConfig, available_presets, load_config
from flash_rt.core.checkpoint import (
    LEROBOT_PREFIX, META_MODEL, META_PRESET, NORM_STATS_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
    expected_layout,
)
from flash_rt.core.progress import ProgressBar
from flash_rt.core.safetensors_stream import TensorEntry, write_streaming

log = logging.getLogger("flash_rt.make_checkpoint")

DEFAULT_STATE_DIMS = 8  # 7-joint arm + gripper
DEFAULT_ACTION_DIMS = 8
TINY_TOKENIZER_VOCAB = 512
LEROBOT, OPENPI = "lerobot", "openpi"
FORMATS = (LEROBOT, OPENPI)
DEFAULT_ASSET_ID = "synthetic"


def init_std_and_mean(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(std, mean) of the normal that initialises ``key``. Nothing is left at zero:
    zero adaRMS weights make every gate 0 and the expert the identity, hiding bugs."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    if key.endswith("embed_tokens.weight"):
        return shape[1] ** -0.5, 0.0  # times sqrt(width) at use: unit-scale text tokens
    if key.endswith("position_embedding.weight"):
        return 0.1, 0.0
    if ".dense." in key:  # adaRMS [scale, shift, gate]: gates ~1 so the expert layers count
        return (2.0 * fan_in ** -0.5, 0.0) if key.endswith("weight") else (0.1, 0.0)
    if "layer_norm" in key or "post_layernorm" in key:  # SigLIP LayerNorm
        return (0.05, 1.0) if key.endswith("weight") else (0.02, 0.0)
    if key.endswith("layernorm.weight") or key.endswith("norm.weight"):
        return 0.1, 0.0  # Gemma RMSNorm w, used as (1 + w)
    if key.endswith("bias"):
        return 0.02, 0.0
    # Unit gain everywhere, residual branches included: the stream then grows ~sqrt(layers)
    # (every use is normalised first) and every layer visibly moves the output.
    return fan_in ** -0.5, 0.0


def tensor_maker(key: str, shape: tuple[int, ...], seed: int, init=init_std_and_mean):
    """A deferred N(mean, std) tensor, ``(std, mean) = init(key, shape)``, seeded by the key
    and ``seed`` (so every tensor is reproducible on its own, in any write order)."""
    def make() -> torch.Tensor:
        gen = torch.Generator().manual_seed((zlib.crc32(key.encode()) ^ seed) & 0x7FFFFFFF)
        std, mean = init(key, shape)
        return torch.randn(shape, generator=gen) * std + mean
    return make


def random_tensor(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The generator's value of canonical tensor ``key`` (the same in every format)."""
    return tensor_maker(key, shape, seed)()


def write_weights(cfg: ModelConfig, out_file: Path, seed: int, dtype: torch.dtype,
                  lerobot_prefix: bool = True) -> None:
    layout = expected_layout(cfg)
    prefix = LEROBOT_PREFIX if lerobot_prefix else ""
    entries = [TensorEntry(prefix + k, shape, tensor_maker(k, shape, seed))
               for k, shape in layout.items()]
    bar = ProgressBar("writing weights", len(entries))
    write_streaming(out_file, entries, dtype=dtype,
                    metadata={META_MODEL: cfg.model, META_PRESET: cfg.preset},
                    progress=bar.update)
    bar.close()


def make_norm_stats(state_dims: int, action_dims: int, seed: int) -> dict:
    """openpi layout; quantiles bracket the mean so both normalisations are well defined."""
    rng = np.random.default_rng(seed)

    def stats(n: int) -> dict:
        mean = rng.normal(0.0, 0.5, n)
        std = rng.uniform(0.2, 1.0, n)
        return {"mean": mean.tolist(), "std": std.tolist(),
                "q01": (mean - 2.0 * std).tolist(), "q99": (mean + 2.0 * std).tolist()}

    return {"norm_stats": {"state": stats(state_dims), "actions": stats(action_dims)}}


def write_openpi_weights(cfg: ModelConfig, out: Path, seed: int, dtype: torch.dtype) -> None:
    from flash_rt.frontends.jax._openpi_checkpoint import PARAMS_DIR
    from flash_rt.tools.openpi_writer import write_openpi_params

    bar = ProgressBar("writing weights", 1, unit="leaves")
    write_openpi_params(cfg, out / PARAMS_DIR, lambda k, shape: random_tensor(k, shape, seed),
                        dtype, progress=bar.update)
    bar.close()


def norm_stats_path(out: Path, fmt: str, asset_id: str) -> Path:
    if fmt == LEROBOT:
        return out / NORM_STATS_FILE
    from flash_rt.frontends.jax._openpi_checkpoint import ASSETS_DIR

    return out / ASSETS_DIR / asset_id / NORM_STATS_FILE


def check_format(model: str, fmt: str, asset_id: Optional[str] = None,
                 lerobot_prefix: bool = True) -> None:
    """Refuse a format, or an option of one, that the model's checkpoint cannot have (rather
    than writing something other than what was asked for)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {FORMATS}")
    if model == GROOT and fmt != LEROBOT:
        raise ValueError(f"the {fmt} format holds Pi0/Pi0.5 weights (openpi's param tree); "
                         "GR00T checkpoints are written in their released layout only "
                         "(sharded model-*.safetensors + config/processor files)")
    layout = "GR00T's released" if model == GROOT else f"the {fmt}"
    if asset_id is not None and fmt != OPENPI:
        raise ValueError(f"an asset id names the assets/ folder of an {OPENPI}-format "
                         f"checkpoint; {layout} layout has none")
    if not lerobot_prefix and (fmt != LEROBOT or model == GROOT):
        raise ValueError(f"the key prefix choice (no leading 'model.') applies to Pi "
                         f"checkpoints in the {LEROBOT} format only, not {layout} layout")


def make_checkpoint(out: str | Path, model: str = "pi05", preset: str = "tiny", seed: int = 0,
                    state_dims: int = DEFAULT_STATE_DIMS, action_dims: int = DEFAULT_ACTION_DIMS,
                    dtype: torch.dtype = torch.float32, lerobot_prefix: bool = True,
                    fmt: str = LEROBOT, asset_id: Optional[str] = None) -> Path:
    """Write the weights (``fmt``), the norm stats and (tiny) tokenizer.model into ``out``
    (GR00T: the released sharded layout and its config/processor files, see
    groot_checkpoint.py). ``asset_id`` (openpi format only) defaults to "synthetic"."""
    check_format(model, fmt, asset_id, lerobot_prefix)
    if model == GROOT:
        from flash_rt.tools.groot_checkpoint import make_groot_checkpoint

        return make_groot_checkpoint(Path(out), preset, seed, state_dims, action_dims, dtype)
    cfg = load_config(model, preset)
    if not 1 <= state_dims <= cfg.action_dim or not 1 <= action_dims <= cfg.action_dim:
        raise ValueError(f"state/action dims must be in [1, {cfg.action_dim}]")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if fmt == LEROBOT:
        write_weights(cfg, out / WEIGHTS_FILE, seed, dtype, lerobot_prefix)
    else:
        write_openpi_weights(cfg, out, seed, dtype)
    log.info("weights written in %.1f s", time.perf_counter() - start)
    stats = norm_stats_path(out, fmt, asset_id or DEFAULT_ASSET_ID)
    stats.parent.mkdir(parents=True, exist_ok=True)
    stats.write_text(json.dumps(make_norm_stats(state_dims, action_dims, seed), indent=1))
    # A stand-in for PaliGemma's tokenizer (which cannot be downloaded here); its ids are a
    # subset of every preset's vocab, so prompts work on tiny and full checkpoints alike.
    from flash_rt.processing.tokenizer import train_tiny_tokenizer

    train_tiny_tokenizer(out / TOKENIZER_FILE, vocab_size=TINY_TOKENIZER_VOCAB)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=ALL_MODELS, default="pi05")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--state-dims", type=int, default=DEFAULT_STATE_DIMS)
    parser.add_argument("--action-dims", type=int, default=DEFAULT_ACTION_DIMS)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--no-model-prefix", action="store_true",
                        help="lerobot format: openpi-converted key layout (no leading 'model.')")
    parser.add_argument("--format", choices=FORMATS, default=LEROBOT,
                        help="pi05/pi0: lerobot (model.safetensors + norm_stats.json) or openpi "
                             "(params/ Orbax + assets/<asset-id>/norm_stats.json); groot has "
                             "only its released layout")
    parser.add_argument("--asset-id", default=None,
                        help=f"openpi format: the assets/ folder of the norm stats (default "
                             f"{DEFAULT_ASSET_ID})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.preset not in available_presets(args.model):
        parser.error(f"--preset must be one of {available_presets(args.model)}")
    try:
        check_format(args.model, args.format, args.asset_id, not args.no_model_prefix)
    except ValueError as exc:
        parser.error(str(exc))
    out = make_checkpoint(args.out, args.model, args.preset, args.seed, args.state_dims,
                          args.action_dims, getattr(torch, args.dtype),
                          lerobot_prefix=not args.no_model_prefix, fmt=args.format,
                          asset_id=args.asset_id)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
