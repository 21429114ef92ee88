"""Reference building blocks against independent (numpy / hand) formulas from the spec."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flash_rt.models.common.functional import (
    MASK_VALUE, apply_rope, attention, flow_timesteps, gemma_rms_norm, positions_from_mask,
    prefix_attention_mask, sinusoidal_time_embedding,
)
from flash_rt.models.common.gemma import AdaRMSNorm, GemmaDecoderLayer
from flash_rt.configs import GemmaConfig


def test_rope_matches_complex_rotation():
    rng = np.random.default_rng(0)
    d, theta = 16, 10000.0
    x = rng.normal(size=(1, 5, 2, d)).astype(np.float32)
    pos = np.array([[0, 1, 2, 7, 100]])
    got = apply_rope(torch.from_numpy(x), torch.from_numpy(pos), theta).numpy()
    half = d // 2
    freqs = theta ** (-2.0 * np.arange(half) / d)
    z = x[..., :half] + 1j * x[..., half:]  # rotate-half pairs i with i + d/2
    rot = z * np.exp(1j * pos[0][None, :, None, None] * freqs)
    want = np.concatenate([rot.real, rot.imag], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gemma_rms_norm_uses_one_plus_w():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    w = rng.normal(size=8).astype(np.float32)
    want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * (1 + w)
    got = gemma_rms_norm(torch.from_numpy(x), torch.from_numpy(w), 1e-6).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_adarms_modulation_order_scale_shift_gate():
    torch.manual_seed(0)
    norm = AdaRMSNorm(4, 6, 1e-6)
    cond = torch.randn(1, 6)
    x = torch.randn(1, 3, 4)
    out, gate = norm(x, cond)
    mod = (cond @ norm.dense.weight.T + norm.dense.bias)[0]
    scale, shift, g = mod[:4], mod[4:8], mod[8:]
    rms = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(out, rms * (1 + scale) + shift)
    torch.testing.assert_close(gate[0, 0], g)


def test_zero_gates_make_an_adarms_layer_the_identity_and_nonzero_do_not():
    cfg = GemmaConfig(width=8, depth=1, num_heads=2, num_kv_heads=1, head_dim=4, mlp_dim=16)
    torch.manual_seed(0)
    layer = GemmaDecoderLayer(cfg, cond_dim=8)
    x, cond = torch.randn(1, 3, 8), torch.randn(1, 8)
    pos = torch.arange(3)[None]
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    out, _ = layer(x, pos, mask, 10000.0, cond=cond)
    assert not torch.allclose(out, x)
    with torch.no_grad():
        for n in (layer.input_layernorm, layer.post_attention_layernorm):
            n.dense.weight[16:] = 0  # gate rows
            n.dense.bias[16:] = 0
    out, _ = layer(x, pos, mask, 10000.0, cond=cond)
    torch.testing.assert_close(out, x)


def test_time_embedding_formula():
    dim, t = 16, torch.tensor([1.0, 0.5, 0.1])
    got = sinusoidal_time_embedding(t, dim, 4e-3, 4.0).numpy()
    frac = np.linspace(0, 1, dim // 2)
    period = 4e-3 * (4.0 / 4e-3) ** frac
    arg = 2 * math.pi * t.numpy().astype(np.float64)[:, None] / period[None]
    np.testing.assert_allclose(got, np.concatenate([np.sin(arg), np.cos(arg)], -1), atol=1e-6)


def test_flow_timesteps():
    assert flow_timesteps(10) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_cumsum_mask_rule_and_positions():
    # prefix of 3 (one invalid), then a suffix with ar=[1, 0]
    input_mask = torch.tensor([[1, 0, 1, 1, 1]], dtype=torch.bool)
    ar = torch.tensor([[0, 0, 0, 1, 0]])
    m = prefix_attention_mask(input_mask, ar)[0].int().tolist()
    assert m == [[1, 0, 1, 0, 0],
                 [0, 0, 0, 0, 0],
                 [1, 0, 1, 0, 0],
                 [1, 0, 1, 1, 1],
                 [1, 0, 1, 1, 1]]
    assert positions_from_mask(input_mask)[0].tolist() == [0, 0, 1, 2, 3]


def test_fully_masked_rows_stay_finite():
    q = torch.randn(1, 2, 2, 4)
    k = torch.randn(1, 3, 1, 4)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    out = attention(q, k, k, mask)
    assert torch.isfinite(out).all()
    assert MASK_VALUE == pytest.approx(-2.3819763e38)


def test_attention_matches_explicit_gqa():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 4, 8), torch.randn(1, 6, 2, 8), torch.randn(1, 6, 2, 8)
    mask = torch.rand(1, 4, 6) > 0.3
    mask[..., 0] = True
    got = attention(q, k, v, mask)
    kk, vv = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)  # head h -> kv h//2
    logits = torch.einsum("bqhd,bkhd->bhqk", q, kk) / math.sqrt(8)
    logits = logits.masked_fill(~mask[:, None], float("-inf"))
    want = torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), vv).reshape(1, 4, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
