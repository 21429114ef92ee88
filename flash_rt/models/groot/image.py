"""Camera frame -> the normalised square view the Qwen3-VL tower takes (GR00T's eval path).

Follows Isaac-GR00T n1.7-release ``gr00t/model/gr00t_n1d7/image_augmentations.py``
(``build_image_transformations_albumentations``'s eval transform): letterbox to a square with
black bars (``LetterBoxPad``), shortest side to ``edge`` with OpenCV's INTER_AREA
(``A.SmallestMaxSize``), centre crop of ``fraction`` of each side
(``FractionalCenterCrop``), shortest side back to ``edge``. The Qwen3-VL image processor then
rescales by 1/255 and normalises with its mean/std; a square edge that is a multiple of
patch * merge (checked by the config) is not resized again.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from flash_rt.configs.groot import ImageConfig
from flash_rt.processing.image import UINT8_MAX, _check_image


def letterbox(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h == w:
        return img
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left,
                              cv2.BORDER_CONSTANT, value=0)


def smallest_side_to(img: np.ndarray, edge: int) -> np.ndarray:
    """albumentations SmallestMaxSize: scale so the shorter side is ``edge`` (rounded)."""
    h, w = img.shape[:2]
    scale = edge / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def center_crop_fraction(img: np.ndarray, fraction: float) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = max(1, int(h * fraction)), max(1, int(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def transform_view(img: np.ndarray, cfg: ImageConfig) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 edge x edge x 3 (the eval transform)."""
    _check_image(img, "camera image")
    out = smallest_side_to(letterbox(np.ascontiguousarray(img)), cfg.edge)
    out = smallest_side_to(center_crop_fraction(out, cfg.fraction), cfg.edge)
    if out.shape[:2] != (cfg.edge, cfg.edge):
        raise AssertionError(f"view came out {out.shape[:2]}, expected a {cfg.edge} square")
    return out


def normalize_view(view: np.ndarray, cfg: ImageConfig) -> torch.Tensor:
    """uint8 HxWx3 -> float32 (3, H, W): (x / 255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(view)).permute(2, 0, 1).float() / UINT8_MAX
    mean = torch.tensor(cfg.pixel_mean)[:, None, None]
    std = torch.tensor(cfg.pixel_std)[:, None, None]
    return (x - mean) / std
