"""The reference frontend moves to another device/dtype (the GPU FP32 reference and the
bf16 baseline of the replay tools); here on the CPU in bf16, since CI has no GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import flash_rt
from flash_rt.core.metrics import cosine


def test_reference_in_bf16_stays_close_to_fp32_seed_for_seed(tiny_pi05_ckpt, camera_images):
    kwargs = dict(model="pi05", hardware="cpu", num_views=2, action_dims=8)
    fp32 = flash_rt.load_model(tiny_pi05_ckpt, **kwargs)
    bf16 = flash_rt.load_model(tiny_pi05_ckpt, **kwargs).to("cpu", torch.bfloat16)
    assert bf16.hardware == "cpu" and bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert all(p.dtype == torch.bfloat16 for p in bf16.reference.parameters())
    inputs = dict(images=camera_images[:2], state=np.linspace(-1, 1, 8, dtype=np.float32),
                  prompt="pick up the cube", seed=5)
    want = fp32.predict(**inputs).actions
    got = bf16.predict(**inputs).actions
    assert got.dtype == np.float32 and got.shape == want.shape and np.isfinite(got).all()
    assert not np.array_equal(got, want), "bf16 weights should change the result a little"
    assert cosine(got, want) > 0.98
    # Same dtype and device as loaded: a no-op move keeps results bit-exact.
    np.testing.assert_array_equal(fp32.to("cpu", torch.float32).predict(**inputs).actions, want)


def test_reference_refuses_other_dtypes(tiny_pi05_ckpt):
    ref = flash_rt.load_model(tiny_pi05_ckpt, model="pi05", hardware="cpu")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        ref.to("cpu", torch.float16)
