"""uint8 camera image -> SigLIP patch rows: resize-with-pad + normalise + im2col must be
bit-identical to the CPU reference path (torch CPU bilinear, round half even)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kutil import FULL, ptr

S, P = FULL.siglip.image_size, FULL.siglip.patch_size
G = S // P
K = 3 * P * P
K_PAD = (K + 15) // 16 * 16


def resized_shape_ref(h, w, size):
    ratio = max(w / size, h / size)
    return max(1, int(h / ratio)), max(1, int(w / ratio))


def reference_patches(img: np.ndarray, k_pad: int) -> torch.Tensor:
    h, w = img.shape[:2]
    nh, nw = resized_shape_ref(h, w, S)
    if (nh, nw) != (h, w):
        x = torch.from_numpy(img).permute(2, 0, 1)[None].to(torch.float32)
        y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=False)
        res = torch.round(y).clamp_(0, 255).to(torch.uint8)[0].permute(1, 2, 0)
    else:
        res = torch.from_numpy(img)
    canvas = torch.zeros(S, S, 3, dtype=torch.uint8)
    top, left = (S - nh) // 2, (S - nw) // 2
    canvas[top:top + nh, left:left + nw] = res
    x = canvas.to(torch.float32) / 255.0 * 2.0 - 1.0  # (S, S, 3)
    rows = x.permute(2, 0, 1).reshape(3, G, P, G, P).permute(1, 3, 0, 2, 4).reshape(G * G, K)
    out = torch.zeros(G * G, k_pad)
    out[:, :K] = rows
    return out.bfloat16()


SIZES = [(480, 640), (720, 1280), (S, S), (300, 500), (100, 150), (640, 480), (481, 643),
         (2, 900), (1080, 1920)]


@pytest.mark.parametrize("hw", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_image_patches_bit_exact(fk, stream, hw):
    h, w = hw
    rng = np.random.default_rng(h * 7919 + w)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if h > 8:  # smooth gradients make exact .5 ties in the bilinear blend likely
        img[: h // 2] = (np.arange(w)[None, :, None] * 255 // max(w - 1, 1)).astype(np.uint8)
    src = torch.from_numpy(img).cuda()
    total = G * G * K_PAD
    raw = torch.full((total + 2048,), 9.0, device="cuda", dtype=torch.bfloat16)
    out = raw[1024:1024 + total].view(G * G, K_PAD)
    nh, nw = fk.image_patches(ptr(src), ptr(out), h, w, S, P, K_PAD, stream)
    assert (nh, nw) == resized_shape_ref(h, w, S)
    assert bool((raw[:1024] == 9).all()) and bool((raw[-1024:] == 9).all())
    want = reference_patches(img, K_PAD).cuda()
    diff = (out != want)
    assert not bool(diff.any()), f"{int(diff.sum())} of {diff.numel()} values differ"


@pytest.mark.parametrize("hw", [(1, 1), (7, 3000), (3000, 7), (223, 225), (448, 448)])
def test_resized_shape_matches_python_formula(fk, hw):
    assert tuple(fk.resized_shape(*hw, S)) == resized_shape_ref(*hw, S)


def test_image_patches_rejects_bad_stride(fk, stream):
    t = torch.empty(16, device="cuda", dtype=torch.uint8)
    with pytest.raises(ValueError, match="out_row_stride"):
        fk.image_patches(ptr(t), ptr(t), 4, 4, S, P, K - 1, stream)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        fk.image_patches(ptr(t), ptr(t), 4, 4, S + 1, P, K, stream)
