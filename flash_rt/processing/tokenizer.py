"""SentencePiece tokenisation to the model's fixed text budget.

The real PaliGemma ``tokenizer.model`` ships with no package here, so tests and demos train a
tiny stand-in with the same special ids (pad 0, unk 1, bos 2, eos 3) and the same
whitespace handling (no normalisation, no dummy prefix, digits split, byte fallback).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import sentencepiece as spm

from flash_rt.core.files import regular_file

# PaliGemma / Gemma special ids (pi05_model_spec.md: BOS 2, pad 0).
PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


class Tokenizer:
    """Wraps a SentencePiece model file; ``encode`` prepends BOS as openpi does."""

    def __init__(self, model_path: str | Path, max_vocab: int | None = None) -> None:
        """``max_vocab`` (the model's ``config.prefix.vocab_size``) rejects a tokenizer whose
        ids could index past the embedding table."""
        path = regular_file(model_path, "tokenizer model")
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        if max_vocab is not None and self.vocab_size > max_vocab:
            raise ValueError(f"tokenizer has {self.vocab_size} ids but the model's vocab is "
                             f"{max_vocab}")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        """The model's BOS id; SentencePiece reports -1 when unset, then use PaliGemma's."""
        bos = self._sp.bos_id()
        return bos if bos >= 0 else BOS_ID

    @property
    def pad_id(self) -> int:
        pad = self._sp.pad_id()
        return pad if pad >= 0 else PAD_ID

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = list(self._sp.encode(text))
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def encode_padded(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` then :func:`pad_tokens` to ``max_len`` (``config.max_token_len``)."""
        return pad_tokens(self.encode(text), max_len, self.pad_id, self.vocab_size)


def pad_tokens(ids: Sequence[int], max_len: int, pad_id: int = PAD_ID,
               vocab_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to ``max_len`` -> (int64 ids, bool mask with True on real tokens).

    Too many tokens is an error, never a silent truncation: a cut prompt changes the policy.
    """
    arr = np.asarray(list(ids))
    if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"token ids must be a 1-D integer sequence, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64).reshape(-1)
    n = arr.shape[0]
    if n > max_len:
        raise ValueError(f"prompt has {n} tokens, more than max_token_len {max_len}")
    if n and arr.min() < 0:
        raise ValueError(f"negative token id {int(arr.min())}")
    if vocab_size is not None and n and arr.max() >= vocab_size:
        raise ValueError(f"token id {int(arr.max())} outside the vocab of {vocab_size}")
    out = np.full(max_len, pad_id, dtype=np.int64)
    out[:n] = arr
    mask = np.zeros(max_len, dtype=np.bool_)
    mask[:n] = True
    return out, mask


_VERBS = ("pick up", "put", "place", "move", "open", "close", "push", "pull", "turn on",
          "turn off", "stack", "wipe", "fold", "pour", "grab", "lift", "slide", "rotate")
_OBJECTS = ("the red block", "the blue cup", "the bowl", "the drawer", "the mug", "the sponge",
            "the towel", "the plate", "the bottle", "the green cube", "the lid", "the spoon",
            "the microwave door", "the cloth", "the yellow ball", "the black box")
_PLACES = ("on the table", "in the basket", "into the sink", "on the shelf", "next to the plate",
           "in the top drawer", "onto the tray", "to the left", "to the right")
_MAX_STATE_BIN = 255


def tiny_corpus() -> list[str]:
    """Deterministic robot-instruction sentences, bare numbers and a few full prompts."""
    lines = []
    for i, verb in enumerate(_VERBS):
        for j, obj in enumerate(_OBJECTS):
            lines.append(f"{verb} {obj} {_PLACES[(i + j) % len(_PLACES)]}")
    lines += [str(b) for b in range(-1, _MAX_STATE_BIN + 1)]
    for k, line in enumerate(lines[:len(_VERBS)]):
        bins = " ".join(str((k * 37 + d * 11) % (_MAX_STATE_BIN + 1)) for d in range(8))
        lines.append(f"Task: {line}, State: {bins};\nAction: ")
    return lines


def train_tiny_tokenizer(out_path: str | Path, vocab_size: int) -> Path:
    """Train a small SentencePiece model at ``out_path`` (at most ``vocab_size`` ids).

    Special ids match PaliGemma's. Byte fallback means any text encodes without
    <unk>; that costs 256 byte pieces, so ``vocab_size`` must leave room above them
    (512 trains reliably). Single-threaded and unshuffled, hence deterministic.
    """
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(tiny_corpus()), model_writer=buf, vocab_size=vocab_size,
            model_type="bpe", pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
            user_defined_symbols=["\n"], num_threads=1, shuffle_input_sentence=False,
            hard_vocab_limit=False, minloglevel=2)
    except RuntimeError as exc:
        raise ValueError(f"could not train a tokenizer with vocab_size={vocab_size}: {exc}") from exc
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "Tokenizer", "pad_tokens",
           "train_tiny_tokenizer"]
