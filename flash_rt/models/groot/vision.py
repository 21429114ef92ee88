"""Qwen3-VL vision tower (FP32 reference), as GR00T N1.7's Cosmos-Reason2-2B backbone runs it.

Follows transformers 4.57.3 (the version Isaac-GR00T n1.7-release pins),
``models/qwen3_vl/modeling_qwen3_vl.py``: ``Qwen3VLVisionModel`` with its Conv3d patch
embedding, bilinearly interpolated learned position table, 2-D rotary positions, pre-LN
blocks, the 2x2 patch merger and the DeepStack mergers. Parameter names mirror the
checkpoint keys under ``backbone.model.model.visual.``.

Tokens of one image are kept in *merge-block order* (each run of merge^2 consecutive tokens
is one 2x2 block of patches, blocks row-major), exactly as the Qwen3-VL image processor
flattens them, so the merger is a reshape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flash_rt.configs.groot import QwenVisionConfig
from flash_rt.models.common.functional import attention, gelu_tanh, rope_angles, rotate_half


def patchify(pixels: torch.Tensor, cfg: QwenVisionConfig) -> torch.Tensor:
    """One normalised image (3, S, S) -> (patches, 3 * T * P * P) rows in merge-block order.

    A still image is repeated over the temporal_patch_size frames, as the Qwen3-VL image
    processor does; each row is ordered (channel, frame, y, x) like the Conv3d kernel.
    """
    c, h, w = pixels.shape
    p, m, t = cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size
    frames = pixels[:, None].expand(c, t, h, w)
    x = frames.reshape(c, t, h // (p * m), m, p, w // (p * m), m, p)
    x = x.permute(2, 5, 3, 6, 0, 1, 4, 7)  # (bh, bw, mh, mw, c, t, py, px)
    return x.reshape(-1, cfg.patch_dim)


def block_order(grid_h: int, grid_w: int, merge: int) -> torch.Tensor:
    """Row-major patch index of each token in merge-block order."""
    idx = torch.arange(grid_h * grid_w).view(grid_h // merge, merge, grid_w // merge, merge)
    return idx.permute(0, 2, 1, 3).reshape(-1)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        k = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.width, kernel_size=k, stride=k)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, patch_dim) -> (N, width): the Conv3d over one patch is a matmul."""
        w = self.proj.weight
        return F.linear(patches.to(w.dtype), w.reshape(w.shape[0], -1), self.proj.bias)


class VisionAttention(nn.Module):
    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (N, width) of one image; full (bidirectional) attention within the image."""
        n = x.shape[0]
        c = self.cfg
        q, k, v = self.qkv(x).view(n, 3, c.num_heads, c.head_dim).unbind(1)
        q = rotate_half(q.float(), cos[:, None], sin[:, None]).to(x.dtype)
        k = rotate_half(k.float(), cos[:, None], sin[:, None]).to(x.dtype)
        full = torch.ones(1, n, n, dtype=torch.bool, device=x.device)
        return self.proj(attention(q[None], k[None], v[None], full)[0])


class VisionMlp(nn.Module):
    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        self.linear_fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.linear_fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(gelu_tanh(self.linear_fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMlp(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    """LayerNorm, 2x2 concatenation, fc1 -> exact GELU -> fc2 to the LLM width.

    ``postshuffle`` (the DeepStack mergers) normalises the concatenated merged_width vector;
    the final merger normalises each patch before concatenating.
    """

    def __init__(self, cfg: QwenVisionConfig, postshuffle: bool):
        super().__init__()
        self.merged = cfg.merged_width
        self.postshuffle = postshuffle
        self.norm = nn.LayerNorm(cfg.merged_width if postshuffle else cfg.width, eps=cfg.layer_norm_eps)
        self.linear_fc1 = nn.Linear(cfg.merged_width, cfg.merged_width)
        self.linear_fc2 = nn.Linear(cfg.merged_width, cfg.out_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.reshape(-1, self.merged)) if self.postshuffle else self.norm(x)
        return self.linear_fc2(F.gelu(self.linear_fc1(x.reshape(-1, self.merged))))


class VisionTower(nn.Module):
    """Images -> (image tokens, DeepStack features), both (views * tokens_per_view, out_width)."""

    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Embedding(cfg.num_position_embeddings, cfg.width)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg, postshuffle=False)
        self.deepstack_merger_list = nn.ModuleList(
            PatchMerger(cfg, postshuffle=True) for _ in cfg.deepstack_layers)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The learned square table bilinearly resampled to (grid_h, grid_w), align-corners
        style (linspace over the table), in merge-block order."""
        g = self.cfg.position_grid
        table = self.pos_embed.weight
        ys = torch.linspace(0, g - 1, grid_h, device=table.device)
        xs = torch.linspace(0, g - 1, grid_w, device=table.device)
        y0, x0 = ys.int(), xs.int()
        y1, x1 = (y0 + 1).clamp(max=g - 1), (x0 + 1).clamp(max=g - 1)
        dy, dx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
        grid = table.view(g, g, -1)
        out = ((1 - dy) * (1 - dx) * grid[y0][:, x0] + (1 - dy) * dx * grid[y0][:, x1]
               + dy * (1 - dx) * grid[y1][:, x0] + dy * dx * grid[y1][:, x1])
        order = block_order(grid_h, grid_w, self.cfg.spatial_merge_size).to(table.device)
        return out.reshape(grid_h * grid_w, -1)[order]

    def rotary(self, grid_h: int, grid_w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (N, head_dim/2): the first half of the pairs rotate by the patch row, the
        second half by its column (theta^(-2j/(head_dim/2)) frequencies)."""
        order = block_order(grid_h, grid_w, self.cfg.spatial_merge_size).to(device)
        rows, cols = order // grid_w, order % grid_w
        half = self.cfg.head_dim // 2  # each axis: a rotary table over half the head dim
        angles = torch.cat([rope_angles(rows, half, self.cfg.rope_theta),
                            rope_angles(cols, half, self.cfg.rope_theta)], dim=-1)
        return torch.cos(angles), torch.sin(angles)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """pixels: (V, 3, S, S) normalised views -> (V * tokens, out_width), DeepStack list."""
        c = self.cfg
        grid_h, grid_w = pixels.shape[-2] // c.patch_size, pixels.shape[-1] // c.patch_size
        pos = self.position_embedding(grid_h, grid_w)
        cos, sin = self.rotary(grid_h, grid_w, pixels.device)
        merged, deep = [], [[] for _ in c.deepstack_layers]
        for view in pixels:
            x = self.patch_embed(patchify(view, c)) + pos
            for i, block in enumerate(self.blocks):
                x = block(x, cos, sin)
                if i in c.deepstack_layers:
                    j = c.deepstack_layers.index(i)
                    deep[j].append(self.deepstack_merger_list[j](x))
            merged.append(self.merger(x))
        return torch.cat(merged), [torch.cat(d) for d in deep]
