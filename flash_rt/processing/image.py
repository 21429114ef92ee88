"""Camera images -> the model's fixed-size views in [-1, 1].

The resize is defined bit-exactly (float32 bilinear, half-pixel centres, no antialiasing,
round-half-to-even) because a CUDA kernel reproduces it later and must match this CPU path.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CHANNELS = 3
UINT8_MAX = 255.0
PAD_VALUE = 0  # uint8 black, i.e. -1 after to_model_range


def _check_image(img: object, where: str) -> np.ndarray:
    """Reject anything but a non-empty uint8 HxWx3 array (no silent broadcast of grey/float)."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{where}: expected a numpy uint8 HxWx3 array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"{where}: dtype must be uint8, got {img.dtype} (shape {img.shape})")
    if img.ndim != 3 or img.shape[-1] != CHANNELS:
        raise ValueError(f"{where}: shape must be HxWx{CHANNELS}, got {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{where}: image is empty, shape {img.shape}")
    return img


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Largest (h, w) fitting in size x size with the input's aspect ratio (openpi's rule).

    Uses the same float arithmetic (``int(H / ratio)``) as openpi, so a side may come out
    one pixel short of ``size`` through float error; that pixel is then padding.
    """
    ratio = max(width / size, height / size)
    return max(1, int(height / ratio)), max(1, int(width / ratio))


def _bilinear_uint8(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """float32 bilinear (align_corners=False, antialias=False), round-half-even, clamp, uint8.

    Note for the CUDA port: torch's CPU kernel computes the source coordinate as
    ``fma(float32(in) / float32(out), dst + 0.5, -0.5)`` (FMA-contracted, one rounding);
    a separate multiply and subtract drifts by ~1e-3 grey levels and can flip a tie.
    """
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(torch.float32)
    y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False,
                      antialias=False)
    y = torch.round(y).clamp_(0.0, UINT8_MAX).to(torch.uint8)
    return y[0].permute(1, 2, 0).contiguous().numpy()


def resize_with_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 HxWx3 to fit size x size keeping aspect ratio, zero-pad centred.

    Semantics: new (h, w) from :func:`resized_shape`; bilinear resize computed in float32
    exactly as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
    antialias=False)``, then ``torch.round`` (half to even) and clamp to [0, 255]. The resize
    is skipped when the size is unchanged. Padding is ``PAD_VALUE``; top/left get
    ``(size - new) // 2`` rows/cols and bottom/right the remainder.
    """
    _check_image(img, "resize_with_pad")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = img.shape[:2]
    new_h, new_w = resized_shape(h, w, size)
    resized = img if (new_h, new_w) == (h, w) else _bilinear_uint8(img, new_h, new_w)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.full((size, size, CHANNELS), PAD_VALUE, dtype=np.uint8)
    out[top:top + new_h, left:left + new_w] = resized
    return out


def to_model_range(img: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] as ``x / 255 * 2 - 1`` (in that order, float32)."""
    t = torch.as_tensor(img)
    if t.dtype != torch.uint8:
        raise ValueError(f"to_model_range expects uint8, got {t.dtype}")
    return t.to(torch.float32) / UINT8_MAX * 2.0 - 1.0


def images_to_tensor(views: Sequence[np.ndarray]) -> torch.Tensor:
    """Equal-sized uint8 HxWx3 views -> float32 (V, 3, H, W) in [-1, 1] (the model's layout)."""
    if len(views) == 0:
        raise ValueError("images_to_tensor needs at least one view")
    for i, v in enumerate(views):
        _check_image(v, f"view {i}")
    shapes = {v.shape for v in views}
    if len(shapes) != 1:
        raise ValueError(f"views must share one shape, got {[v.shape for v in views]}")
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(views)))
    return to_model_range(stacked.permute(0, 3, 1, 2).contiguous())


def check_views(images: Sequence[np.ndarray | None],
                num_views: int) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Validate camera images (``None`` = missing) without touching pixels.

    Returns the list padded with ``None`` to ``num_views`` and the (num_views,) bool view
    mask. More images than ``num_views`` is an error. GPU frontends resize on the device
    from these raw frames; :func:`prepare_views` resizes them on the CPU.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    images = list(images)
    if len(images) > num_views:
        raise ValueError(f"got {len(images)} images but the model takes {num_views} views")
    images += [None] * (num_views - len(images))
    checked = [None if img is None else _check_image(img, f"view {i}")
               for i, img in enumerate(images)]
    return checked, np.array([img is not None for img in checked], dtype=np.bool_)


def prepare_views(images: Sequence[np.ndarray | None], num_views: int,
                  image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera images (``None`` = missing) -> ((num_views, 3, S, S) float32, (num_views,) bool).

    Missing views, including any beyond ``len(images)``, become a black image (-1) with
    mask False so attention ignores them. More images than ``num_views`` is an error.
    Pass ``config.num_views`` and ``config.siglip.image_size``.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    checked, mask = check_views(images, num_views)
    blank = np.full((image_size, image_size, CHANNELS), PAD_VALUE, dtype=np.uint8)
    views = [blank if img is None else resize_with_pad(img, image_size) for img in checked]
    return images_to_tensor(views), torch.from_numpy(mask)


__all__ = ["check_views", "images_to_tensor", "prepare_views", "resize_with_pad", "resized_shape",
           "to_model_range"]
