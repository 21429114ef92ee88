"""GR00T N1.7 reference components, each against a re-computation written here.

The re-computations use other formulations (complex rotations, explicit loops over the
patch grid, torch's own MultiheadAttention / interpolate / SDPA) so a shared mistake with
the reference is unlikely. Parity with Isaac-GR00T itself is checked outside CI
(docs/groot.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flash_rt.configs import load_config
from flash_rt.models.groot import action_head as ah
from flash_rt.models.groot.embodiment import (CategorySpecificLinear,
                                              MultiEmbodimentActionEncoder)
from flash_rt.models.groot.language import (TextLayer, mrope_axis_of_pair, mrope_cos_sin,
                                            mrope_positions)
from flash_rt.models.groot.reference import GrootReference
from flash_rt.models.groot.transformer import Dit, DitBlock, timestep_sinusoid
from flash_rt.models.groot.vision import VisionTower, patchify

CFG = load_config("groot", "tiny")


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.ndim == 1 else 0.0))
    return module.eval()


def _complex_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) by ``angles`` (..., D/2) as complex numbers."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    z = z * torch.exp(1j * angles.double())
    return torch.cat([z.real, z.imag], dim=-1).float()


def test_patchify_is_the_conv3d_patch_grid_in_merge_block_order():
    v = CFG.vision
    img = torch.randn(3, 64, 64)
    rows = patchify(img, v)
    p, m = v.patch_size, v.spatial_merge_size
    expected = []
    for by in range(64 // (p * m)):
        for bx in range(64 // (p * m)):
            for my in range(m):
                for mx in range(m):
                    y, x = (by * m + my) * p, (bx * m + mx) * p
                    patch = img[:, y:y + p, x:x + p]
                    expected.append(torch.stack([patch] * v.temporal_patch_size, 1).reshape(-1))
    assert torch.equal(rows, torch.stack(expected))


def test_position_table_is_align_corners_bilinear_in_block_order():
    tower = _randomize(VisionTower(CFG.vision))
    g = CFG.vision.position_grid
    grid = 16
    got = tower.position_embedding(grid, grid)
    table = tower.pos_embed.weight.detach().T.reshape(1, -1, g, g)
    ref = F.interpolate(table, size=(grid, grid), mode="bilinear", align_corners=True)[0]
    ref = ref.permute(1, 2, 0)  # (y, x, C)
    m = CFG.vision.spatial_merge_size
    order = [(by * m + my, bx * m + mx) for by in range(grid // m) for bx in range(grid // m)
             for my in range(m) for mx in range(m)]
    expected = torch.stack([ref[y, x] for y, x in order])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_vision_tower_matches_a_loop_over_patches():
    """One full tower pass vs a re-computation: complex 2-D rotary, SDPA, merger by grid."""
    v = CFG.vision
    tower = _randomize(VisionTower(v), seed=1)
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    merged, deep = tower(img)
    grid = 64 // v.patch_size
    m = v.spatial_merge_size
    coords = [(by * m + my, bx * m + mx) for by in range(grid // m) for bx in range(grid // m)
              for my in range(m) for mx in range(m)]
    w = tower.patch_embed.proj
    x = torch.stack([F.conv3d(img[0][:, None].expand(3, v.temporal_patch_size, 64, 64)[None]
                              [:, :, :, r * v.patch_size:(r + 1) * v.patch_size,
                               c * v.patch_size:(c + 1) * v.patch_size],
                              w.weight, w.bias).reshape(-1) for r, c in coords])
    x = x + tower.position_embedding(grid, grid)
    hd = v.head_dim
    freqs = 1.0 / v.rope_theta ** (torch.arange(0, hd // 2, 2).double() / (hd // 2))
    angles = torch.stack([torch.cat([r * freqs, c * freqs]) for r, c in coords])
    deep_ref = []
    for i, blk in enumerate(tower.blocks):
        h = blk.norm1(x)
        q, k, val = blk.attn.qkv(h).view(len(coords), 3, v.num_heads, hd).unbind(1)
        q, k = (_complex_rotate(t, angles[:, None]) for t in (q, k))
        o = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1),
                                           val.transpose(0, 1)).transpose(0, 1)
        x = x + blk.attn.proj(o.reshape(len(coords), -1))
        x = x + blk.mlp.linear_fc2(F.gelu(blk.mlp.linear_fc1(blk.norm2(x)), approximate="tanh"))
        if i in v.deepstack_layers:
            dm = tower.deepstack_merger_list[v.deepstack_layers.index(i)]
            cat = x.reshape(-1, v.merged_width)
            deep_ref.append(dm.linear_fc2(F.gelu(dm.linear_fc1(dm.norm(cat)))))
    mg = tower.merger
    cat = torch.cat([mg.norm(x[j::m * m]) for j in range(m * m)], dim=-1)
    merged_ref = mg.linear_fc2(F.gelu(mg.linear_fc1(cat)))
    torch.testing.assert_close(merged, merged_ref, atol=2e-4, rtol=2e-4)
    for a, b in zip(deep, deep_ref):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


def test_mrope_positions_by_hand():
    img = CFG.tokens.image_token_id
    ids = torch.tensor([10, 11] + [img] * 4 + [12, 13])
    pos = mrope_positions(ids, img, grid=2)
    assert pos.tolist() == [[0, 1, 2, 2, 2, 2, 4, 5],
                            [0, 1, 2, 2, 3, 3, 4, 5],
                            [0, 1, 2, 3, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="one view"):
        mrope_positions(torch.tensor([img] * 3), img, grid=2)


def test_mrope_pair_axes_are_interleaved():
    # tiny: 8 pairs, sections (t, h, w) = (4, 2, 2): h takes pairs 1, 4; w takes 2, 5
    assert mrope_axis_of_pair(CFG.text).tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
    full = load_config("groot", "full").text
    axes = mrope_axis_of_pair(full)
    assert [int((axes == a).sum()) for a in range(3)] == list(full.mrope_section)


def test_text_layer_matches_sdpa_with_gqa_and_complex_rotary():
    t = CFG.text
    layer = _randomize(TextLayer(t), seed=2)
    s = 9
    x = torch.randn(1, s, t.width)
    pos = torch.stack([torch.arange(s), torch.arange(s) * 2, torch.arange(s) * 3])
    cos, sin = mrope_cos_sin(pos, t)
    causal = torch.tril(torch.ones(s, s, dtype=torch.bool))[None]
    got = layer(x, cos, sin, causal)

    def rms(v, w):
        return w * v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + t.rms_norm_eps)

    inv = 1.0 / t.rope_theta ** (torch.arange(0, t.head_dim, 2).double() / t.head_dim)
    axis = mrope_axis_of_pair(t)
    angles = pos.double()[axis].T * inv
    a = layer.self_attn
    h = rms(x, layer.input_layernorm.weight)
    q = rms(a.q_proj(h).view(1, s, t.num_heads, t.head_dim), a.q_norm.weight)
    k = rms(a.k_proj(h).view(1, s, t.num_kv_heads, t.head_dim), a.k_norm.weight)
    v = a.v_proj(h).view(1, s, t.num_kv_heads, t.head_dim)
    q, k = (_complex_rotate(z, angles[:, None]) for z in (q, k))
    group = t.num_heads // t.num_kv_heads
    k, v = (z.repeat_interleave(group, dim=2) for z in (k, v))
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True).transpose(1, 2).reshape(1, s, -1)
    x2 = x + a.o_proj(o)
    mlp = layer.mlp
    h2 = rms(x2, layer.post_attention_layernorm.weight)
    ref = x2 + mlp.down_proj(F.silu(mlp.gate_proj(h2)) * mlp.up_proj(h2))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_timestep_sinusoid_formula():
    t = torch.tensor([0, 250, 999])
    got = timestep_sinusoid(t, 8)
    i = np.arange(4)
    f = np.exp(-math.log(10000.0) * i / 3)
    arg = t.numpy()[:, None] * f
    np.testing.assert_allclose(got.numpy(), np.concatenate([np.cos(arg), np.sin(arg)], 1),
                               rtol=1e-5, atol=1e-4)


def _mha(attn, width, kv_width):
    mha = torch.nn.MultiheadAttention(width, attn.heads, bias=True, batch_first=True,
                                      kdim=kv_width, vdim=kv_width)
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([attn.to_q.weight, attn.to_k.weight,
                                                attn.to_v.weight]))
        else:
            mha.q_proj_weight.copy_(attn.to_q.weight)
            mha.k_proj_weight.copy_(attn.to_k.weight)
            mha.v_proj_weight.copy_(attn.to_v.weight)
        mha.in_proj_bias.copy_(torch.cat([attn.to_q.bias, attn.to_k.bias, attn.to_v.bias]))
        mha.out_proj.weight.copy_(attn.to_out[0].weight)
        mha.out_proj.bias.copy_(attn.to_out[0].bias)
    return mha.eval()


@pytest.mark.parametrize("cross", [False, True])
def test_dit_block_matches_multihead_attention(cross):
    d = CFG.dit
    kv = CFG.backbone_embedding_dim if cross else None
    blk = _randomize(DitBlock(d, kv), seed=3)
    x = torch.randn(2, 5, d.width)
    temb = torch.randn(2, d.width)
    ctx = torch.randn(2, 7, kv) if cross else None
    keep = torch.tensor([[1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    got = blk(x, temb, ctx, keep if cross else None)
    scale, shift = blk.norm1.linear(F.silu(temb)).chunk(2, dim=1)
    h = F.layer_norm(x, (d.width,), eps=d.norm_eps) * (1 + scale[:, None]) + shift[:, None]
    mha = _mha(blk.attn1, d.width, kv or d.width)
    src = ctx if cross else h
    a, _ = mha(h, src, src, key_padding_mask=(~keep) if cross else None, need_weights=False)
    y = x + a
    ff = blk.ff
    ref = y + ff.net[2](F.gelu(ff.net[0].proj(F.layer_norm(y, (d.width,), eps=d.norm_eps)),
                              approximate="tanh"))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_alternate_dit_reads_text_then_image_tokens():
    dit = Dit(CFG.dit, CFG.backbone_embedding_dim, True, CFG.attend_text_every_n_blocks)
    valid = torch.tensor([[True, True, True, False]])
    image = torch.tensor([[False, True, True, True]])
    text_blocks = [i for i in range(CFG.dit.num_layers) if not CFG.dit.is_self_attention(i)
                   and torch.equal(dit.cross_key_mask(i, valid, image), valid & ~image)]
    image_blocks = [i for i in range(CFG.dit.num_layers) if not CFG.dit.is_self_attention(i)
                    and torch.equal(dit.cross_key_mask(i, valid, image), valid & image)]
    assert text_blocks == [0] and image_blocks == [2]  # 4 blocks: cross, self, cross, self
    plain = Dit(CFG.dit, CFG.backbone_embedding_dim, False, CFG.attend_text_every_n_blocks)
    assert plain.cross_key_mask(0, valid, image) is None


def test_category_specific_linear_picks_the_embodiment():
    lin = _randomize(CategorySpecificLinear(3, 4, 5))
    x = torch.randn(2, 6, 4)
    ids = torch.tensor([2, 0])
    got = lin(x, ids)
    for b, e in enumerate(ids.tolist()):
        torch.testing.assert_close(got[b], x[b] @ lin.W[e] + lin.b[e])


def test_action_encoder_formula():
    enc = _randomize(MultiEmbodimentActionEncoder(3, 8, 2))
    a = torch.randn(1, 4, 3)
    t = torch.tensor([500])
    ids = torch.tensor([1])
    got = enc(a, t, ids)
    half = 4
    f = torch.exp(-torch.arange(half).double() * math.log(10000.0) / half)
    tau = torch.cat([torch.sin(500 * f), torch.cos(500 * f)]).float().expand(4, 8)
    w = [getattr(enc, n) for n in ("W1", "W2", "W3")]
    h = a[0] @ w[0].W[1] + w[0].b[1]
    h = torch.cat([h, tau], -1) @ w[1].W[1] + w[1].b[1]
    h = h * torch.sigmoid(h)
    torch.testing.assert_close(got[0], h @ w[2].W[1] + w[2].b[1], atol=1e-5, rtol=1e-5)


def test_euler_steps_forward_in_time_with_bucketed_t(monkeypatch):
    """x_{k+1} = x_k + v(x_k, int(k/N * buckets)) / N, from noise at t=0 (Isaac-GR00T's
    direction, opposite to Pi0.5's)."""
    assert ah.discrete_timesteps(4, 1000) == [0, 250, 500, 750]
    head = ah.ActionHead(CFG)
    seen = []

    def velocity(self, actions, t_bucket, state_tokens, ids, ctx):
        seen.append(t_bucket)
        return torch.full_like(actions, float(t_bucket + 1))

    monkeypatch.setattr(ah.ActionHead, "velocity", velocity)
    monkeypatch.setattr(ah.ActionHead, "encode_state", lambda self, s, i: None)
    ctx = ah.VlContext(torch.zeros(1, 3, CFG.backbone_embedding_dim), None, None)
    noise = torch.randn(1, CFG.action_horizon, CFG.max_action_dim)
    out = head.sample(ctx, None, torch.tensor([0]), noise)
    assert seen == [0, 250, 500, 750]
    torch.testing.assert_close(out, noise + (1 + 251 + 501 + 751) / 4)


def test_reference_uses_every_input():
    """Embodiment, images, prompt and state each change the actions (nothing ignored)."""
    torch.manual_seed(0)
    ref = GrootReference(CFG)
    from flash_rt.tools.groot_checkpoint import groot_tensor
    ref.load_state_dict({k: groot_tensor(k, tuple(v.shape), 0)()
                         for k, v in ref.state_dict().items()})
    ref.eval()
    tk, tpv = CFG.tokens, CFG.tokens_per_view
    ids = torch.tensor([[1] + ([tk.vision_start_token_id] + [tk.image_token_id] * tpv
                               + [tk.vision_end_token_id]) * 2 + [40, 41, 42]])
    base = dict(pixels=torch.rand(2, 3, 256, 256) * 2 - 1, input_ids=ids,
                token_mask=torch.ones_like(ids, dtype=torch.bool),
                state=torch.rand(1, 1, CFG.max_state_dim), embodiment_id=torch.tensor([1]),
                noise=torch.randn(1, CFG.action_horizon, CFG.max_action_dim))
    out = ref.sample_actions(**base)
    assert torch.equal(out, ref.sample_actions(**base))
    changes = {"embodiment_id": torch.tensor([2]), "pixels": base["pixels"].flip(-1),
               "input_ids": ids.clone().index_fill_(1, torch.tensor([ids.shape[1] - 1]), 43),
               "state": base["state"] + 0.5}
    for name, value in changes.items():
        other = ref.sample_actions(**{**base, name: value})
        assert (other - out).abs().max() > 1e-3, name


def test_dit_forward_chains_blocks_and_modulates_the_output_shift_first():
    d = CFG.dit
    dit = _randomize(Dit(d, CFG.backbone_embedding_dim, True, CFG.attend_text_every_n_blocks),
                     seed=5)
    x = torch.randn(1, 1 + CFG.action_horizon, d.width)
    ctx = torch.randn(1, 6, CFG.backbone_embedding_dim)
    valid = torch.ones(1, 6, dtype=torch.bool)
    image = torch.tensor([[False, True, True, True, False, False]])
    t = torch.tensor([250])
    got = dit(x, ctx, t, valid, image)
    emb = dit.timestep_encoder.timestep_embedder
    temb = emb.linear_2(F.silu(emb.linear_1(timestep_sinusoid(t, d.timestep_channels))))
    h = x
    for i, blk in enumerate(dit.transformer_blocks):
        if i % 2:
            h = blk(h, temb)
        else:  # blocks 0 and 2: text tokens, then image tokens
            h = blk(h, temb, ctx, ~image if i == 0 else image)
    out = dit.proj_out_1(F.silu(temb))
    shift, scale = out[:, :d.width], out[:, d.width:]
    ref = dit.proj_out_2(F.layer_norm(h, (d.width,), eps=d.out_norm_eps) * (1 + scale[:, None])
                         + shift[:, None])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
