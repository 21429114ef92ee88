"""Input/output staging of the GPU frontends (the IO half of a frontend).

Per observation the host writes camera frames, token ids, masks, positions and noise into
pinned buffers owned here; the captured graph then reads them. Two ways, one per kind of GPU:

- :class:`DeviceStaging` (discrete GPUs: Hopper, RTX): async H2D copies from the pinned
  buffers into device twins are recorded *inside* the graph, so a replay picks up whatever
  the host last wrote.
- :class:`MappedStaging` (Jetson Thor, CPU and GPU share DRAM): the kernels read the pinned
  buffers directly through their mapped (UVA) addresses; nothing is copied.

Both compute the device-side sizes on the host from the observation: the prefix key mask
(masked views, padding, and the suffix rows ``[valid_len, valid_len + suffix_len)``: Pi0's
state token, then the actions), RoPE positions (``cumsum(mask) - 1``), the suffix
positions, ``valid_len`` and the cache row of the first action. Models with a state token
also get the normalised state (bf16, read by its projection GEMM).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flash_rt.models.common.processor import RawObservation
from flash_rt.models.common.paligemma_pipeline import InputPointers, PaliGemmaDims

ImageKey = tuple[tuple[int, int], ...]  # (H, W) per view; missing views use (S, S)


def pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype).pin_memory()


class HostInputs:
    """Pinned host buffers and the host-side computation of masks and positions."""

    MAX_IMAGE_SHAPES = 8  # distinct camera resolutions kept (each also has a graph)

    def __init__(self, d: PaliGemmaDims, device: Any):
        self.d, self.device = d, device
        self.host = {
            "tokens": pinned((d.text_len,), torch.int32),
            "positions": pinned((d.prefix_len,), torch.int32),
            # state token (if any), then the actions
            "suffix_positions": pinned((d.suffix_len,), torch.int32),
            "key_mask": pinned((d.cache_rows,), torch.uint8),
            # [valid_len, cache row of the first action = valid_len + state tokens, 0, 0]
            "valid_len": pinned((4,), torch.int32),
            "noise": pinned((d.horizon, d.action_dim), torch.float32),
        }
        if d.state_tokens:
            self.host["state"] = pinned((d.action_dim,), torch.bfloat16)
        self.images: dict[tuple[int, int, int], torch.Tensor] = {}

    def image_key(self, raw: RawObservation) -> ImageKey:
        s = self.d.image_size
        return tuple((s, s) if img is None else img.shape[:2] for img in raw.images)

    def _image_buffer(self, view: int, h: int, w: int) -> torch.Tensor:
        key = (view, h, w)
        if key not in self.images:
            if len(self.images) >= self.MAX_IMAGE_SHAPES * self.d.views:
                raise RuntimeError(f"more than {self.MAX_IMAGE_SHAPES} camera resolutions per "
                                   "view; resize frames to a fixed size upstream")
            self.images[key] = pinned((h, w, 3), torch.uint8)
        return self.images[key]

    def write(self, raw: RawObservation, noise: torch.Tensor) -> ImageKey:
        """Fill the pinned buffers for one observation; returns its image-shape key."""
        d = self.d
        key = self.image_key(raw)
        for v, (img, (h, w)) in enumerate(zip(raw.images, key)):
            buf = self._image_buffer(v, h, w)
            if img is None:
                buf.zero_()
            else:
                buf.numpy()[...] = img
        n_text = int(raw.token_mask.sum())
        if not raw.token_mask[:n_text].all():
            raise ValueError("token mask must be a right-padded prefix of True values")
        prefix_valid = np.zeros(d.prefix_len, dtype=np.bool_)
        prefix_valid[:d.image_rows] = np.repeat(raw.view_mask, d.tokens_per_view)
        prefix_valid[d.image_rows:d.image_rows + n_text] = True
        valid_len = d.image_rows + n_text
        key_mask = np.zeros(d.cache_rows, dtype=np.uint8)
        key_mask[:d.prefix_len] = prefix_valid
        key_mask[valid_len:valid_len + d.suffix_len] = 1  # the suffix's own keys
        n_valid = int(prefix_valid.sum())
        h = self.host
        h["tokens"].numpy()[...] = raw.tokens
        h["positions"].numpy()[...] = np.cumsum(prefix_valid) - 1
        h["suffix_positions"].numpy()[...] = n_valid + np.arange(d.suffix_len)
        h["key_mask"].numpy()[...] = key_mask
        h["valid_len"].numpy()[:2] = (valid_len, valid_len + d.state_tokens)
        h["noise"].copy_(noise.reshape(d.horizon, d.action_dim))
        if d.state_tokens:
            h["state"].copy_(torch.from_numpy(raw.state))  # round to nearest even
        return key

    def image_tensors(self, key: ImageKey) -> list[torch.Tensor]:
        return [self.images[(v, h, w)] for v, (h, w) in enumerate(key)]

    def _pointers(self, bufs: dict[str, torch.Tensor],
                  images: list[torch.Tensor]) -> InputPointers:
        """The stages' view of ``bufs`` (the host buffers or their device twins)."""
        suffix, valid = bufs["suffix_positions"], bufs["valid_len"]
        with_state = "state" in bufs
        return InputPointers(
            images=[(t.data_ptr(), t.shape[0], t.shape[1]) for t in images],
            tokens=bufs["tokens"].data_ptr(), positions=bufs["positions"].data_ptr(),
            action_positions=suffix[self.d.state_tokens:].data_ptr(),
            key_mask=bufs["key_mask"].data_ptr(), valid_len=valid.data_ptr(),
            actions_start=valid[1:].data_ptr(),
            state=bufs["state"].data_ptr() if with_state else 0,
            state_position=suffix.data_ptr() if with_state else 0)


class DeviceStaging(HostInputs):
    """Discrete GPU: device twins of every buffer, filled by H2D copies inside the graph."""

    def __init__(self, d: PaliGemmaDims, device: Any):
        super().__init__(d, device)
        self.dev = {k: torch.empty_like(v, device=device) for k, v in self.host.items()}
        self.dev_images: dict[tuple[int, int, int], torch.Tensor] = {}

    def _dev_images(self, key: ImageKey) -> list[torch.Tensor]:
        out = []
        for v, (h, w) in enumerate(key):
            if (v, h, w) not in self.dev_images:
                self.dev_images[(v, h, w)] = torch.empty((h, w, 3), dtype=torch.uint8,
                                                         device=self.device)
            out.append(self.dev_images[(v, h, w)])
        return out

    def pointers(self, key: ImageKey) -> InputPointers:
        return self._pointers(self.dev, self._dev_images(key))

    def copy_in(self, key: ImageKey, x: torch.Tensor) -> None:
        """Record/issue the H2D copies on the current stream; the noise lands in ``x``."""
        for dst, src in zip(self._dev_images(key), self.image_tensors(key)):
            dst.copy_(src, non_blocking=True)
        for name, src in self.host.items():
            if name != "noise":
                self.dev[name].copy_(src, non_blocking=True)
        x.copy_(self.host["noise"], non_blocking=True)


class MappedStaging(HostInputs):
    """Integrated GPU: kernels read the pinned buffers in place (zero-copy, UVA pointers);
    only the noise is copied, because the Euler state is updated in place on the device."""

    def pointers(self, key: ImageKey) -> InputPointers:
        return self._pointers(self.host, self.image_tensors(key))

    def copy_in(self, key: ImageKey, x: torch.Tensor) -> None:
        x.copy_(self.host["noise"], non_blocking=True)


class HostOutputs:
    """Un-normalised and normalised action chunks in pinned host memory, written by copies
    at the end of the graph (un-normalisation is a per-dim affine map, done on the GPU)."""

    def __init__(self, d: PaliGemmaDims, scale: np.ndarray, offset: np.ndarray, device: Any):
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=device)
        self.offset = torch.as_tensor(offset, dtype=torch.float32, device=device)
        self.actions_dev = torch.empty((d.horizon, d.action_dim), dtype=torch.float32,
                                       device=device)
        self.actions = pinned((d.horizon, d.action_dim), torch.float32)
        self.normalized = pinned((d.horizon, d.action_dim), torch.float32)

    def copy_out(self, x: torch.Tensor) -> None:
        torch.addcmul(self.offset, x, self.scale, out=self.actions_dev)
        self.actions.copy_(self.actions_dev, non_blocking=True)
        self.normalized.copy_(x, non_blocking=True)

