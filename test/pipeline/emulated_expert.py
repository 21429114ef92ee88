"""CPU emulation of the expert_megakernel binding: interprets the task tables it is given.

Reads exactly what the CUDA kernel reads (the schedule tables, the packed weight pages in
the wgmma core-matrix layout, the scale-table slots, the buffers named in ``ptrs``) and
applies each task's contract from csrc/megakernel/expert_tasks.cuh, one block's list in
order, blocks interleaved at random under the counters' semantics. So CPU CI checks the
schedule, the weight packing (row orders, tiles, pages), the epilogues' row mapping and
the scale indexing; the CUDA kernel is checked against this contract on the GPU.
"""
from __future__ import annotations

import math
import random

import torch

from flash_rt.models.common.functional import MASK_VALUE
from flash_rt.models.common.expert_schedule import (ATTN, ATTN_KEYS, ATTN_ROWS, COMBINE,
                                                  COMBINE_COLS, COMBINE_ITEMS, DOWN, GATE_UP,
                                                  MAX_SPLIT_K,
                                                  NORM_IN, NORM_MID, NORM_OUT, NORM_TOKENS,
                                                  O_PROJ, QKV, TILE_ROWS)

from .emulated_kernels import BF16, F32, FP8, I32, U8, gelu, q8, scalar, view

SITES = 4  # per layer in the scale table: qkv, o, gate_up, down (16-byte slots)


def bf16r(x: torch.Tensor) -> torch.Tensor:
    return x.to(BF16).float()


class ChunkMajor:
    """A (tpad, K) FP8 activation stored chunk-major, as the kernel keeps it (expert_tasks.cuh
    ``act_offset``: byte (row, col) at (col // 16) * tpad * 16 + row * 16 + col % 16),
    indexed as logical rows."""

    def __init__(self, ptr: int, tp: int, k: int):
        self.tp, self.k = tp, k
        self.cells = view(ptr, (k // 16, tp, 16), FP8).permute(1, 0, 2)  # (tp, k/16, 16)

    def rows(self) -> torch.Tensor:
        return self.cells.reshape(self.tp, self.k)  # a copy (the view is not row-major)

    def __getitem__(self, idx) -> torch.Tensor:
        return self.rows()[idx]

    def __setitem__(self, idx, value) -> None:
        full = self.rows()
        full[idx] = value
        self.cells.copy_(full.view(self.tp, self.k // 16, 16))


class _State:
    def __init__(self, p: dict, z: dict, eps: float, attn_scale: float):
        self.p, self.z, self.eps, self.attn_scale = p, z, eps, attn_scale
        H, W, F, D, heads = z["H"], z["W"], z["F"], z["head_dim"], z["heads"]
        tp, depth, rows, splits = z["tpad"], z["depth"], z["cache_rows"], z["splits"]
        self.x = view(p["x"], (H, W), BF16)
        self.xn = view(p["xn"], (H, W), BF16)
        self.act_w = ChunkMajor(p["act_w"], tp, W)
        self.act_attn = ChunkMajor(p["act_attn"], tp, heads * D)
        self.act_mlp = ChunkMajor(p["act_mlp"], tp, F)
        self.part = view(p["part"], (MAX_SPLIT_K, tp, W), F32)  # O's / down's K-split partials
        self.q = view(p["q"], (H, heads * D), BF16)
        self.kc = view(p["k_cache"], (depth, rows, D), BF16)
        self.vc = view(p["v_cache"], (depth, rows, D), BF16)
        self.rope = view(p["rope"], (z["rope_rows"], D // 2, 2), F32)
        self.pos = view(p["positions"], (H,), I32).long()
        self.valid = int(scalar(p["valid_len"], I32))
        self.mask = view(p["key_mask"], (rows,), U8) if p["key_mask"] else None
        self.part_o = view(p["part_o"], (splits, heads, H, D), F32)
        self.part_lse = view(p["part_lse"], (splits, heads, H), F32)
        self.mod = view(p["mod"], (2 * depth + 1, 3 * W), F32)
        self.ascale_ptr = p["ascale"]  # read per site, as the kernel does: a pass whose last
        # layer stops after QKV (kv_only_last) has no slots for that layer's other sites
        self.wscale = view(p["wscale"], (depth * SITES,), F32)
        self.wpack = p["wpack"]
        self.pages = None
        if z["fold_in"] or z["fold_out"]:  # the folded action I/O
            A = z["action_dim"]
            self.dt = torch.tensor(-1.0 / z["steps"], dtype=F32)  # as the launcher's float
            self.act_x = view(p["act_x"], (H, A), F32)
            self.act_x_bf16 = view(p["act_x_bf16"], (H, A), BF16)
            if z["fold_in"]:
                self.act_in_w = view(p["act_in_w"], (W, A), BF16)
                self.act_in_b = view(p["act_in_b"], (W,), BF16)
            if z["fold_out"]:
                self.act_out_w = view(p["act_out_w"], (A, W), BF16)
                self.act_out_b = view(p["act_out_b"], (A,), BF16)

    def site(self, layer: int, site: int) -> float:
        return float(scalar(self.ascale_ptr + 4 * 4 * (layer * SITES + site), F32))

    def gemm_scale(self, layer: int, site: int) -> float:
        return self.site(layer, site) * float(self.wscale[layer * SITES + site])


def _weight_tile(st: _State, pages) -> torch.Tensor:
    """The task's (64, klen) weight tile from its pages (chunk c, row r at c*1024 + r*16)."""
    parts = []
    for off, nbytes in pages:
        kp = nbytes // TILE_ROWS
        raw = view(st.wpack + off, (kp // 16, TILE_ROWS, 16), U8)
        parts.append(raw.permute(1, 0, 2).reshape(TILE_ROWS, kp))
    return torch.cat(parts, 1).contiguous().view(FP8).float()


def _norm(st: _State, t) -> None:
    z = st.z
    W, L = z["W"], t.layer
    if t.op == NORM_IN:
        gate_row, norm_row, site = (2 * L - 1 if L > 0 else -1), 2 * L, 0
    elif t.op == NORM_MID:
        gate_row, norm_row, site = 2 * L, 2 * L + 1, 2
    else:
        gate_row, norm_row, site = 2 * z["depth"] - 1, 2 * z["depth"], -1
    embed = z["fold_in"] and t.op == NORM_IN and L == 0
    for tok in range(t.tile, min(z["H"], t.tile + NORM_TOKENS)):
        if embed:  # the action-in projection's value: fp32 sum, bias, one bf16 rounding
            v = bf16r(st.act_x_bf16[tok].float() @ st.act_in_w.float().T + st.act_in_b.float())
            st.x[tok] = v.to(BF16)
        else:
            v = st.x[tok].float()
        if gate_row >= 0:
            n = z["o_splits"] if t.op == NORM_MID else z["down_splits"]
            y = st.part[:n, tok].sum(0)
            if z["plain_residual"]:  # Pi0: x + branch, rounded once
                v = bf16r(v + y)
            else:  # Pi0.5: x + gate * bf16(branch)
                v = bf16r(v + st.mod[gate_row, 2 * W:] * bf16r(y))
            st.x[tok] = v.to(BF16)
        rstd = torch.rsqrt((v * v).sum() / W + st.eps)
        o = v * rstd * (1 + st.mod[norm_row, :W]) + st.mod[norm_row, W:2 * W]
        if t.op == NORM_OUT:
            st.xn[tok] = o.to(BF16)
            if z["fold_out"]:  # action-out projection (bf16 out), then the Euler step
                vel = bf16r(st.xn[tok].float() @ st.act_out_w.float().T + st.act_out_b.float())
                x = st.act_x[tok] + st.dt * vel
                st.act_x[tok] = x
                st.act_x_bf16[tok] = x.to(BF16)
        else:
            st.act_w[tok] = q8(o, st.site(L, site))


def _gemm(st: _State, t, pages) -> None:
    z = st.z
    H = z["H"]
    src = {O_PROJ: st.act_attn, DOWN: st.act_mlp}.get(t.op, st.act_w)
    act = src[:, t.k0:t.k0 + t.klen].float()  # (tpad, klen)
    d = _weight_tile(st, pages) @ act.T      # (64, tpad): rows = packed features
    r = torch.arange(TILE_ROWS)
    w, hi, l4 = r // 16, (r % 16) // 8, r % 8
    if t.op == QKV:
        D, heads = z["head_dim"], z["heads"]
        head, group = t.tile // (D // TILE_ROWS), t.tile % (D // TILE_ROWS)
        val = bf16r(d[:, :H] * st.gemm_scale(t.layer, 0))
        pair = (group * (TILE_ROWS // 2) + 8 * w + l4)[hi == 0]
        x1, x2 = val[hi == 0], val[hi == 1]  # (32, H) each, pair-aligned
        if head <= heads:
            cs = st.rope[st.pos][:, pair]  # (H, 32, 2)
            c, s = cs[..., 0].T, cs[..., 1].T
            x1, x2 = x1 * c - x2 * s, x2 * c + x1 * s
        if head < heads:
            st.q[:, head * D + pair] = x1.T.to(BF16)
            st.q[:, head * D + D // 2 + pair] = x2.T.to(BF16)
        else:
            cache = st.kc if head == heads else st.vc
            for tok in range(H):
                row = st.valid + tok
                if 0 <= row < z["cache_rows"]:
                    cache[t.layer, row, pair] = x1[:, tok].to(BF16)
                    cache[t.layer, row, D // 2 + pair] = x2[:, tok].to(BF16)
    elif t.op == GATE_UP:
        val = bf16r(d[:, :H] * st.gemm_scale(t.layer, 2))
        cols = (t.tile * (TILE_ROWS // 2) + 8 * w + l4)[hi == 0]
        o = gelu(val[hi == 0]) * val[hi == 1]  # (32, H)
        inv = 1.0 / st.site(t.layer, 3)
        st.act_mlp[:H, cols] = (o.T * inv).clamp(-448, 448).to(FP8)
    else:
        site = 1 if t.op == O_PROJ else 3
        st.part[t.k0 // t.klen, :H, t.tile * TILE_ROWS:(t.tile + 1) * TILE_ROWS] = \
            (d[:, :H] * st.gemm_scale(t.layer, site)).T


def _attention(st: _State, t) -> None:
    z = st.z
    H, D, heads = z["H"], z["head_dim"], z["heads"]
    n_keys = min(max(st.valid + H, 0), z["cache_rows"])
    j0, j1 = t.k0 * ATTN_KEYS, min((t.k0 + 1) * ATTN_KEYS, n_keys)
    R = torch.arange(t.tile * ATTN_ROWS, min(H * heads, (t.tile + 1) * ATTN_ROWS))
    tok, h = R // heads, R % heads
    if j0 >= j1:
        st.part_o[t.k0, h, tok] = 0
        st.part_lse[t.k0, h, tok] = -math.inf
        return
    qv = st.q.view(H, heads, D)[tok, h].float()                      # (rows, D)
    s = (qv @ st.kc[t.layer, j0:j1].float().T) * st.attn_scale     # (rows, keys)
    if st.mask is not None:
        s = torch.where(st.mask[j0:j1][None] == 0, torch.tensor(MASK_VALUE), s)
    m = s.max(1, keepdim=True).values
    p = torch.exp(s - m)
    l = p.sum(1, keepdim=True)
    st.part_o[t.k0, h, tok] = (p @ st.vc[t.layer, j0:j1].float()) / l
    st.part_lse[t.k0, h, tok] = (m + torch.log(l))[:, 0]


def _combine(st: _State, t) -> None:
    z = st.z
    H, D, heads = z["H"], z["head_dim"], z["heads"]
    items = torch.arange(t.tile * COMBINE_ITEMS, (t.tile + 1) * COMBINE_ITEMS)
    row, c = items // (D // COMBINE_COLS), items % (D // COMBINE_COLS)
    keep = row < H * heads
    row, c = row[keep], c[keep]
    tok, h = row % H, row // H
    lse = st.part_lse[:, h, tok]                                     # (splits, items)
    wgt = torch.where(torch.isinf(lse), torch.zeros(()), torch.exp(lse - lse.max(0).values))
    cols = COMBINE_COLS * c[:, None] + torch.arange(COMBINE_COLS)    # (items, cols)
    parts = st.part_o[:, h[:, None], tok[:, None], cols]             # (splits, items, cols)
    o = bf16r((wgt[..., None] * parts).sum(0) / wgt.sum(0)[:, None])  # bf16, then FP8
    st.act_attn[tok[:, None], h[:, None] * D + cols] = q8(o, st.site(t.layer, 1))


class _T:
    __slots__ = ("op", "layer", "tile", "k0", "klen", "wait_ctr", "wait_target", "signal_ctr")

    def __init__(self, row):
        for name, v in zip(self.__slots__, row.tolist()):
            setattr(self, name, v)


class _Counters:
    """The default build's words: a counter each, then the finished blocks; all zero
    between launches (scheduler.cuh)."""

    def __init__(self, ptr: int, n: int, blocks: int):
        self.words = view(ptr, (n + 1,), I32)
        assert int(self.words.abs().sum()) == 0, "counters must be zero at launch"

    def count(self, ctr: int) -> int:
        return int(self.words[ctr])

    def signal(self, ctr: int, block: int) -> None:
        self.words[ctr] += 1

    def finish(self) -> None:
        self.words.zero_()  # what the last block does


def _as_i32(u: int) -> int:
    """An unsigned 32-bit word as the int32 tensor holds it."""
    return u - (1 << 32) if u >= 1 << 31 else u


class _BlockFlags:
    """FLASH_RT_MK_BLOCK_FLAGS' words (scheduler.cuh): word (ctr, block) holds the launch's
    tag (epoch << 16) | that block's signals on ctr so far; a wait sums the counts whose tag
    is this launch's; the last block advances the epoch (word n * blocks + 1)."""

    BITS = 16

    def __init__(self, ptr: int, n: int, blocks: int):
        self.n, self.blocks = n, blocks
        self.words = view(ptr, (n * blocks + 2,), I32)
        assert int(self.words[n * blocks]) == 0, "the finished-blocks count must be zero at launch"
        epoch = int(self.words[n * blocks + 1]) & 0xFFFFFFFF
        self.tag = (epoch << self.BITS) & 0xFFFFFFFF
        self.mine = [[0] * blocks for _ in range(n)]  # each block's own counts (its shared memory)

    def _u32(self, ctr: int) -> list[int]:
        row = self.words[ctr * self.blocks:(ctr + 1) * self.blocks]
        return [int(v) & 0xFFFFFFFF for v in row.tolist()]

    def count(self, ctr: int) -> int:
        mask = (1 << self.BITS) - 1
        return sum(w & mask for w in self._u32(ctr) if w & ~mask == self.tag)

    def signal(self, ctr: int, block: int) -> None:
        self.mine[ctr][block] += 1
        self.words[ctr * self.blocks + block] = _as_i32(self.tag | self.mine[ctr][block])

    def finish(self) -> None:
        e = self.n * self.blocks + 1
        self.words[e] = _as_i32((int(self.words[e]) + 1) & 0xFFFFFFFF)


def run(ptrs: dict, sizes: dict, eps: float, attn_scale: float, seed: int = 0,
        block_flags: bool = False) -> None:
    """Execute one launch of the kernel's contract (``block_flags``: with the words of a
    FLASH_RT_MK_BLOCK_FLAGS build)."""
    z = dict(sizes)
    blocks = z["blocks"]
    starts = view(ptrs["task_start"], (blocks + 1,), I32).tolist()
    pstarts = view(ptrs["page_start"], (blocks + 1,), I32).tolist()
    tasks = view(ptrs["tasks"], (starts[-1], 8), I32)
    pages = view(ptrs["pages"], (max(pstarts[-1], 1), 2), torch.int64)
    sync = (_BlockFlags if block_flags else _Counters)(ptrs["counters"], z["counters"], blocks)
    assert z["counter_words"] >= sync.words.numel(), "the counters buffer is too short"
    st = _State(ptrs, z, eps, attn_scale)
    pos, pcur = list(starts[:-1]), list(pstarts[:-1])
    rng = random.Random(seed)
    while True:
        ready = []
        for b in range(blocks):
            if pos[b] < starts[b + 1]:
                t = _T(tasks[pos[b]])
                if t.wait_ctr < 0 or sync.count(t.wait_ctr) >= t.wait_target:
                    ready.append((b, t))
        if not ready:
            left = [b for b in range(blocks) if pos[b] < starts[b + 1]]
            assert not left, f"deadlock: blocks {left[:8]} wait forever"
            break
        b, t = rng.choice(ready)
        if t.op in (NORM_IN, NORM_MID, NORM_OUT):
            _norm(st, t)
        elif t.op in (QKV, O_PROJ, GATE_UP, DOWN):
            n = -(-t.klen // 512)
            _gemm(st, t, [tuple(pages[i].tolist()) for i in range(pcur[b], pcur[b] + n)])
            pcur[b] += n
        elif t.op == ATTN:
            _attention(st, t)
        elif t.op == COMBINE:
            _combine(st, t)
        else:
            raise AssertionError(f"unknown op {t.op}")
        sync.signal(t.signal_ctr, b)
        pos[b] += 1
    assert pcur == pstarts[1:], "every block must consume exactly its pages"
    sync.finish()
