"""Byte-level BPE from a Hugging Face ``tokenizer.json`` (Qwen2/Qwen3's tokenizer), no hub.

Implements the pieces Qwen's tokenizer.json declares: NFC normalisation, special (added)
tokens matched first and never split, the ``Split`` pre-tokenizer regex taken from the file
itself (it needs ``\\p{L}``-style classes, hence the ``regex`` module), the GPT-2 byte to
unicode map, and rank-ordered merges. Anything else in a tokenizer.json (other models,
normalisers, byte fallback, dropout) is refused rather than approximated.
:func:`write_tokenizer_json` trains a small one in the same format for tests.
"""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import regex

# Qwen2's pre-tokenizer pattern; used when writing a tokenizer (reading takes the file's).
QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}"
                      r"\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CACHE = 4096


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable unicode characters."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def _split_pattern(pre: dict) -> str:
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    pattern = None
    for step in steps:
        kind = step.get("type")
        if kind == "Split":
            if step.get("behavior") != "Isolated" or step.get("invert"):
                raise ValueError("only an isolated, non-inverted Split pre-tokenizer is supported")
            pattern = step["pattern"].get("Regex")
        elif kind == "ByteLevel":
            if step.get("add_prefix_space") or step.get("use_regex", False):
                raise ValueError("only ByteLevel(add_prefix_space=False, use_regex=False) is "
                                 "supported")
        else:
            raise ValueError(f"unsupported pre-tokenizer {kind!r}")
    if pattern is None:
        raise ValueError("tokenizer.json has no Split regex pre-tokenizer")
    return pattern


class BpeTokenizer:
    """``encode(text) -> ids`` and ``decode(ids) -> text`` for a byte-level BPE file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer not found: {self.path}")
        spec = json.loads(self.path.read_text(encoding="utf-8"))
        model = spec.get("model") or {}
        if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("dropout"):
            raise ValueError(f"{self.path}: only byte-level BPE without dropout/byte fallback "
                             "is supported")
        post = spec.get("post_processor")
        if post is not None and post.get("type") != "ByteLevel":
            raise ValueError(f"{self.path}: post-processor {post.get('type')!r} would add "
                             "tokens; only none or ByteLevel (Qwen's) is supported")
        norm = spec.get("normalizer")
        if norm not in (None, {"type": "NFC"}):
            raise ValueError(f"{self.path}: unsupported normalizer {norm}")
        self._nfc = norm is not None
        self._split = regex.compile(_split_pattern(spec.get("pre_tokenizer") or {}))
        self.vocab: dict[str, int] = dict(model["vocab"])
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
                  for m in model.get("merges", [])]
        self._ranks = {pair: i for i, pair in enumerate(merges)}
        self.special: dict[str, int] = {t["content"]: int(t["id"])
                                        for t in spec.get("added_tokens", [])}
        self._special_re = (regex.compile("|".join(regex.escape(s) for s in
                                                   sorted(self.special, key=len, reverse=True)))
                            if self.special else None)
        self._id_to_token = {i: t for t, i in {**self.vocab, **self.special}.items()}
        self._bytes = byte_to_unicode()
        self._unbytes = {c: b for b, c in self._bytes.items()}
        self._bpe = lru_cache(maxsize=_CACHE)(self._bpe_uncached)

    @property
    def vocab_size(self) -> int:
        return max(self._id_to_token) + 1

    def token_id(self, token: str) -> int:
        if token in self.special:
            return self.special[token]
        if token in self.vocab:
            return self.vocab[token]
        raise KeyError(f"{self.path}: no token {token!r}")

    def _bpe_uncached(self, word: str) -> tuple[str, ...]:
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self._ranks.get(p, len(self._ranks)), i)
                      for i, p in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == len(self._ranks):
                break
            first, second = parts[i], parts[i + 1]
            merged, j = [], 0
            while j < len(parts):  # merge every occurrence of this pair, left to right
                if j + 1 < len(parts) and parts[j] == first and parts[j + 1] == second:
                    merged.append(first + second)
                    j += 2
                else:
                    merged.append(parts[j])
                    j += 1
            parts = merged
        return tuple(parts)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids = []
        for piece in self._split.findall(text):
            word = "".join(self._bytes[b] for b in piece.encode("utf-8"))
            for sym in self._bpe(word):
                if sym not in self.vocab:
                    raise ValueError(f"{self.path}: BPE produced {sym!r}, not in the vocab")
                ids.append(self.vocab[sym])
        return ids

    def encode(self, text: str) -> list[int]:
        if self._nfc:
            text = unicodedata.normalize("NFC", text)
        ids, pos = [], 0
        for m in (self._special_re.finditer(text) if self._special_re else ()):
            ids += self._encode_ordinary(text[pos:m.start()])
            ids.append(self.special[m.group()])
            pos = m.end()
        return ids + self._encode_ordinary(text[pos:])

    def decode(self, ids: Sequence[int]) -> str:
        out, raw = [], bytearray()
        for i in ids:
            tok = self._id_to_token[int(i)]
            if tok in self.special:
                out.append(raw.decode("utf-8", "replace") + tok)
                raw = bytearray()
            else:
                raw += bytes(self._unbytes[c] for c in tok)
        return "".join(out) + raw.decode("utf-8", "replace")


def _train_merges(words: Counter, num_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE training over byte-mapped words (ties broken by the pair itself)."""
    corpus = {tuple(w): n for w, n in words.items()}
    merges = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for sym, n in corpus.items():
            for p in zip(sym, sym[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        updated = {}
        for sym, n in corpus.items():
            out, j = [], 0
            while j < len(sym):
                if j + 1 < len(sym) and (sym[j], sym[j + 1]) == best:
                    out.append(sym[j] + sym[j + 1])
                    j += 2
                else:
                    out.append(sym[j])
                    j += 1
            updated[tuple(out)] = updated.get(tuple(out), 0) + n
        corpus = updated
    return merges


def write_tokenizer_json(path: str | Path, special_tokens: dict[str, int],
                         corpus: Iterable[str], num_merges: int) -> Path:
    """A small Qwen-format tokenizer.json: the special tokens at the given ids, the 256 byte
    symbols and ``num_merges`` merges learned on ``corpus`` at the lowest free ids.
    Deterministic."""
    split = regex.compile(QWEN_SPLIT_PATTERN)
    bmap = byte_to_unicode()
    words: Counter = Counter()
    for line in corpus:
        for piece in split.findall(line):
            words["".join(bmap[b] for b in piece.encode("utf-8"))] += 1
    merges = _train_merges(words, num_merges)
    taken = set(special_tokens.values())
    free = (i for i in range(len(taken) + 256 + len(merges) + 1) if i not in taken)
    vocab: dict[str, int] = dict(special_tokens)  # also in the vocab: HF keeps their ids
    for sym in [bmap[b] for b in range(256)] + [a + b for a, b in merges]:
        if sym not in vocab:
            vocab[sym] = next(free)
    spec = {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": t, "special": True, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False}
                         for t, i in sorted(special_tokens.items(), key=lambda kv: kv[1])],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return out
