"""Declarative weight conversion: checkpoint keys -> fused, folded, quantised device buffers.

A model's spec is a list of items; each says which checkpoint tensors it reads and what
device buffers it produces, so the conversion is data, not a hand-written loop:

- :class:`Linear` — one GEMM operand: weights stacked along N (QKV or gate/up fusion; the
  stacked blocks optionally interleaved in groups of rows), an
  optional Gemma ``(1 + w)`` norm folded into the K columns, an optional bias, stored as
  FP8 e4m3 with a per-tensor dequantisation scale (or bf16). Outputs ``<name>.w``,
  ``<name>.ws`` (FP8 only: float32 (1,)) and ``<name>.b`` (bf16, when there is a bias).
- :class:`Copy` — a tensor kept as it is (bf16 or float32): embeddings, LayerNorm weights.
- :class:`Derived` — a function of some tensors, computed in float32 and stored float32 or
  bf16 (per-step adaRMS tables, Pi0's folded action-time weights).

Weights stay in ``nn.Linear`` (N, K) layout: the GEMMs take B as (N, K) row-major, so no
transpose is needed. ``{i}`` in names and keys is expanded by :class:`LayerBlock`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional, Union

import torch

E4M3_MAX = 448.0
FP8 = torch.float8_e4m3fn


@dataclass(frozen=True)
class Linear:
    name: str
    weights: tuple[str, ...]
    bias: tuple[str, ...] = ()
    fold_norm: Optional[str] = None  # Gemma RMSNorm weight w, multiplied in as (1 + w)
    fp8: bool = True
    flatten: bool = False  # conv kernel (N, C, P, P) -> (N, C*P*P), conv weight order
    pad_k_to: int = 1  # zero-pad K up to a multiple of this (GEMM alignment)
    # > 0: the stacked weights' rows interleaved in groups of this many (gate rows 0..g-1,
    # up rows 0..g-1, gate rows g..2g-1, ...) instead of one block after the other
    interleave: int = 0

    def keys(self) -> tuple[str, ...]:
        return self.weights + self.bias + ((self.fold_norm,) if self.fold_norm else ())


@dataclass(frozen=True)
class Copy:
    name: str
    key: str
    dtype: torch.dtype = torch.bfloat16

    def keys(self) -> tuple[str, ...]:
        return (self.key,)


@dataclass(frozen=True)
class Derived:
    name: str
    inputs: tuple[str, ...]
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] = field(compare=False)
    dtype: torch.dtype = torch.float32  # bf16 for a GEMM operand (weight, bias)

    def keys(self) -> tuple[str, ...]:
        return self.inputs


Item = Union[Linear, Copy, Derived]


def _expand(value, i: int):
    if isinstance(value, str):
        return value.replace("{i}", str(i))
    if isinstance(value, tuple):
        return tuple(_expand(v, i) for v in value)
    return value


@dataclass(frozen=True)
class LayerBlock:
    """``items`` repeated for layers 0..num_layers-1; ``skip_last`` names items the last
    layer does not need (e.g. the prefix's final MLP, whose output feeds nothing)."""

    items: tuple[Item, ...]
    num_layers: int
    skip_last: frozenset[str] = frozenset()

    def expand(self) -> list[Item]:
        out: list[Item] = []
        for i in range(self.num_layers):
            for it in self.items:
                if i == self.num_layers - 1 and it.name in self.skip_last:
                    continue
                fields = {f: _expand(getattr(it, f), i) for f in it.__dataclass_fields__
                          if f != "fn"}
                out.append(replace(it, **fields))
        return out


@dataclass(frozen=True)
class WeightSpec:
    items: tuple[Item, ...]
    unused: frozenset[str]  # checkpoint keys the fast path never reads (checked, not silent)
    version: str

    def keys(self) -> set[str]:
        return {k for it in self.items for k in it.keys()}

    def check_layout(self, layout: Iterable[str]) -> None:
        """Every checkpoint key is either read or declared unused, and nothing else is read."""
        layout = set(layout)
        read = self.keys()
        unknown = sorted(read - layout)
        forgotten = sorted(layout - read - self.unused)
        if unknown or forgotten:
            raise ValueError(f"weight spec {self.version} does not cover the layout: reads "
                             f"unknown keys {unknown[:10]}, ignores keys {forgotten[:10]}")


def flatten_items(entries: Iterable[Union[Item, LayerBlock]]) -> tuple[Item, ...]:
    out: list[Item] = []
    for e in entries:
        out.extend(e.expand() if isinstance(e, LayerBlock) else [e])
    return tuple(out)


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor e4m3: scale = amax / 448 (dequantisation scale), w8 = sat(w / scale)."""
    scale = (w.abs().amax().float().clamp_min(1e-12) / E4M3_MAX).reshape(1)
    return (w.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8), scale


def interleave_rows(parts: list[torch.Tensor], group: int) -> torch.Tensor:
    """Equal-shaped (R, ...) tensors -> (len(parts) R, ...) with their rows taken ``group``
    at a time from each in turn."""
    rows = parts[0].shape[0]
    if any(p.shape != parts[0].shape for p in parts) or rows % group:
        raise ValueError(f"interleaving rows in groups of {group} needs equal shapes with a "
                         f"multiple of {group} rows, got {[tuple(p.shape) for p in parts]}")
    tail = parts[0].shape[1:]
    grouped = torch.stack([p.reshape(rows // group, group, *tail) for p in parts], dim=1)
    return grouped.reshape(len(parts) * rows, *tail)


def split_interleaved(t: torch.Tensor, parts: int, group: int, dim: int = 0) -> list[torch.Tensor]:
    """The inverse of :func:`interleave_rows` along ``dim`` (0: a stacked weight's rows; -1:
    the columns of a GEMM output over it): ``parts`` tensors, each 1 / parts of ``dim``."""
    d = dim % t.dim()
    v = t.unflatten(d, (-1, parts, group))
    return [v.select(d + 1, i).flatten(d, d + 1) for i in range(parts)]


def convert_linear(item: Linear, get: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    def stacked(keys):
        parts = [get(k).float() for k in keys]
        return interleave_rows(parts, item.interleave) if item.interleave else torch.cat(parts)

    w = stacked(item.weights)
    if item.flatten:
        w = w.reshape(w.shape[0], -1)
    if item.fold_norm:
        w = w * (1.0 + get(item.fold_norm).float())[None, :]
    pad = -w.shape[1] % item.pad_k_to
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    out: dict[str, torch.Tensor] = {}
    if item.fp8:
        out[f"{item.name}.w"], out[f"{item.name}.ws"] = quantize_fp8(w)
    else:
        out[f"{item.name}.w"] = w.to(torch.bfloat16).contiguous()
    if item.bias:
        out[f"{item.name}.b"] = stacked(item.bias).to(torch.bfloat16)
    return out


def convert_item(item: Item, get: Callable[[str], torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(item, Linear):
        return convert_linear(item, get)
    if isinstance(item, Copy):
        return {item.name: get(item.key).to(item.dtype).contiguous()}
    return {item.name: item.fn({k: get(k).float() for k in item.inputs}).float()
            .to(item.dtype).contiguous()}


def convert(spec: WeightSpec, get: Callable[[str], torch.Tensor],
            progress: Optional[Callable[[int, int], None]] = None) -> dict[str, torch.Tensor]:
    """Run every item; ``get(key)`` returns the checkpoint tensor (already on the target
    device). Returns buffer name -> tensor."""
    out: dict[str, torch.Tensor] = {}
    for n, item in enumerate(spec.items):
        produced = convert_item(item, get)
        clash = set(produced) & set(out)
        if clash:
            raise ValueError(f"weight spec produces {sorted(clash)} twice")
        out.update(produced)
        if progress:
            progress(n + 1, len(spec.items))
    return out


def dequantize(buffers: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """float32 view of a converted Linear weight (for tests and emulation)."""
    w = buffers[f"{name}.w"].float()
    return w * buffers[f"{name}.ws"] if f"{name}.ws" in buffers else w
