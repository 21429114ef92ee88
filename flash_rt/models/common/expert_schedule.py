"""The action expert (Pi0.5's; Pi0's is the same op list, see expert_megakernel.py) as a
static task schedule for the persistent kernel.

One denoising step = for every layer the phases below (each waits for the whole previous
phase), then the final norm. The op list mirrors ``pipeline_common.expert_layers``:

=========  =================================================================  ==========
phase      what a task does                                                    tasks
=========  =================================================================  ==========
norm_in    x (+= gate * sum of down's partials) -> adaRMS -> FP8 act_w          H/NORM_TOKENS
qkv        64 output features of QKV (RoPE pairs in one tile), all K           (Hq+2) D/64
attn       64 packed (token, head) rows x one 64-key split                     rows/64 x S
combine    256 (row, 4-column) items of the split-K merge -> FP8 act_attn      rows D/1024
o          64 features x one head's 256 inputs -> its partial slice            W/64 x Hq
norm_mid   x += gate * sum of O's partials -> adaRMS -> FP8 act_w              H/NORM_TOKENS
gate_up    32 MLP columns (their gate and up rows interleaved) + GeGLU         F/32
down       64 features x a 512-wide K slice -> its partial slice               W/64 x F/512
=========  =================================================================  ==========

(O and down per ``splitk_scale``: that many heads / pages per task.) The split-K partial
products go to slice ``k0 / klen`` of an (8, tpad, W) fp32 buffer with plain stores; the
next norm sums the slices in order.

FP8 activations between the phases are chunk-major (byte (row, col) at
``(col // 16) * tpad * 16 + row * 16 + col % 16``, the wgmma B layout), so every GEMM task
loads its K slice with one bulk copy.

Weights are packed at load into the order the blocks read them: each GEMM task's tile
(64 rows x its K range) is one contiguous block in the wgmma core-matrix layout (K chunk
c of 16 bytes, row r at ``c * 1024 + r * 16``), cut into pages of at most 512 K columns
(32 KiB) that a producer warp bulk-copies ahead. Row orders inside a tile put what one
thread's epilogue needs into accumulator rows r and r + 8 (see expert_tasks.cuh): the two
halves of a RoPE pair (QKV) and a gate column with its up column (gate/up).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flash_rt.core.task_schedule import MODIFY, READ, WRITE, Schedule, Task
from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP

# Op codes: csrc/megakernel/task_table.h (test_expert_schedule checks they agree).
NORM_IN, QKV, ATTN, COMBINE, O_PROJ, NORM_MID, GATE_UP, DOWN, NORM_OUT = range(9)
OP_NAMES = ("norm_in", "qkv", "attn", "combine", "o", "norm_mid", "gate_up", "down", "norm_out")

TILE_ROWS = 64          # output features per GEMM tile (wgmma M)
PAGE_K = 512            # input features per weight page (32 KiB of FP8)
WEIGHT_SLOTS = 3        # pages in the kernel's shared-memory ring: a task waits for all of
                        # its pages before its first MMA, so it may hold no more than this
CHUNK = 16              # bytes of K per core-matrix row
NORM_TOKENS = 1         # tokens per norm task (csrc/megakernel/task_table.h kNormTokens)
ATTN_ROWS = 64          # packed (token, head) rows per attention task
ATTN_KEYS = 64          # keys per split
COMBINE_ITEMS = 256     # (row, COMBINE_COLS-column) items per combine task
COMBINE_COLS = 4        # columns per combine item (task_table.h kCombineCols)
MAX_SPLITS = 32         # the kernel's combine holds at most this many splits
MAX_SPLIT_K = 8         # K splits of O / down a norm sums (task_table.h kMaxSplitK)
TOKEN_PAD = 16          # tokens are padded to a multiple of this (wgmma N)
MAX_TOKENS = 64
MAX_WIDTH = 1024        # a norm task keeps 4 features per token and thread in registers
WORK_BYTES = 101_376    # the kernel's shared work area (csrc/megakernel/expert_tasks.cuh)
WEIGHT_SITES = ("qkv", "o", "gate_up", "down")  # per-layer order of scales and weights
TRACE_STAMPS = 6        # per task in a traced launch: wait start, run start, inputs in, math
                        # done, body end, signalled (csrc/megakernel/task_table.h)


@dataclass(frozen=True)
class ExpertDims:
    """The sizes the schedule depends on (from the pipeline's PaliGemmaDims)."""

    horizon: int
    width: int
    mlp: int
    heads: int
    kv_heads: int
    head_dim: int
    depth: int
    cache_rows: int
    # K per O / down task in multiples of the default (one head; one page of the MLP, or the
    # largest multiple up to this that divides it): fewer, longer split-K tasks and fewer
    # partial slices for the next norm to sum
    # (FLASH_RT_MK_SPLITK_SCALE, an A/B knob read by expert_megakernel.expert_dims).
    splitk_scale: int = 1
    # The last layer only makes its K/V (norm_in and QKV; no final norm): a pass whose
    # rows are keys for later passes and whose output feeds nothing (Pi0's state token).
    kv_only_last: bool = False
    # Finer dependencies (FLASH_RT_MK_GROUPED_DEPS, an A/B knob read by
    # expert_megakernel.expert_dims): a down task waits only for the gate/up tiles of its K
    # slice, and an O task only for the combine tasks of its heads (where no combine task
    # holds rows of two O slices), not for the whole phase before it.
    grouped_deps: bool = False

    @property
    def tpad(self) -> int:
        return -(-self.horizon // TOKEN_PAD) * TOKEN_PAD

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def splits(self) -> int:
        return max(2, -(-self.cache_rows // ATTN_KEYS))

    @property
    def attn_rows(self) -> int:
        return self.horizon * self.heads

    @property
    def down_klen(self) -> int:
        base = next(k for k in (PAGE_K, 256, 128, 64, 32) if self.mlp % k == 0)
        return next(base * s for s in range(self.splitk_scale, 0, -1) if self.mlp % (base * s) == 0)

    @property
    def down_splits(self) -> int:
        return self.mlp // self.down_klen

    @property
    def o_klen(self) -> int:
        """O's K per task: splitk_scale heads of head_dim inputs."""
        return self.head_dim * self.splitk_scale

    @property
    def o_splits(self) -> int:
        return self.q_dim // self.o_klen

    @property
    def combine_rows(self) -> int:
        """Packed attention rows per combine task (COMBINE_COLS columns an item)."""
        return COMBINE_ITEMS // (self.head_dim // COMBINE_COLS)

    @property
    def combine_tasks(self) -> int:
        return -(-(self.attn_rows * self.head_dim // COMBINE_COLS) // COMBINE_ITEMS)

    @property
    def max_klen(self) -> int:
        """The widest activation slice a GEMM task stages in shared memory."""
        return max(self.width, self.o_klen, self.down_klen)


def unsupported_reason(d: ExpertDims) -> str | None:
    """Why the kernel cannot run these dims (None: it can)."""
    if d.head_dim != 256 or d.kv_heads != 1:
        return f"needs head_dim 256 and one KV head (got {d.head_dim}, {d.kv_heads})"
    if d.horizon > MAX_TOKENS:
        return f"needs horizon <= {MAX_TOKENS} (got {d.horizon})"
    if d.width % 256 or d.width > MAX_WIDTH:
        return f"needs an expert width that is a multiple of 256, <= {MAX_WIDTH} (got {d.width})"
    if d.mlp % 32:
        return f"needs an MLP width that is a multiple of 32 (got {d.mlp})"
    if d.splitk_scale < 1 or d.heads % d.splitk_scale:
        return f"splitk_scale {d.splitk_scale} must divide the heads ({d.heads})"
    if max(d.o_splits, d.down_splits) > MAX_SPLIT_K:
        return (f"needs at most {MAX_SPLIT_K} K splits of O and down (got {d.o_splits} heads, "
                f"{d.down_splits} down slices)")
    if d.splits > MAX_SPLITS:
        return f"needs cache rows <= {MAX_SPLITS * ATTN_KEYS} (got {d.cache_rows})"
    if -(-d.max_klen // PAGE_K) > WEIGHT_SLOTS:
        return f"a GEMM task of {d.max_klen} input features needs more than {WEIGHT_SLOTS} pages"
    if d.tpad * d.max_klen > WORK_BYTES:
        return f"activation tile {d.tpad} x {d.max_klen} exceeds the work area"
    return None


@dataclass(frozen=True)
class PackedGemm:
    """Where one layer's Linear goes in the packed weight buffer."""

    layer: int
    site: str
    offset: int          # bytes
    row_order: np.ndarray  # packed row -> original weight row
    tiles: int
    k_slices: int
    klen: int


def qkv_row_order(d: ExpertDims) -> np.ndarray:
    """Packed row -> original QKV row: per head and 32-pair group, rows 16w + 0..7 hold
    dims 8w + 0..7 of the group and rows 16w + 8..15 their RoPE partners (+ D/2)."""
    D, half = d.head_dim, d.head_dim // 2
    order = []
    for head in range(d.heads + 2 * d.kv_heads):
        for group in range(D // TILE_ROWS):
            for w in range(TILE_ROWS // 16):
                base = head * D + group * (TILE_ROWS // 2) + 8 * w
                order += [base + i for i in range(8)] + [base + half + i for i in range(8)]
    return np.asarray(order, dtype=np.int64)


def gate_up_row_order(d: ExpertDims) -> np.ndarray:
    """Packed row -> gate/up weight row: the identity. Per 32-column tile the kernel wants
    rows 16w + 0..7 to be gate columns 8w + 0..7 and rows 16w + 8..15 the same up ones,
    which is the weight spec's gate/up interleave (``GATE_UP_GROUP`` = 8) already."""
    assert GATE_UP_GROUP == 8 and (TILE_ROWS // 2) % GATE_UP_GROUP == 0
    return np.arange(2 * d.mlp, dtype=np.int64)


def _gemm_layout(d: ExpertDims) -> dict[str, tuple[np.ndarray, int, int]]:
    """site -> (row order, K slices, K per slice)."""
    W, F = d.width, d.mlp
    return {
        "qkv": (qkv_row_order(d), 1, W),
        "o": (np.arange(W), d.o_splits, d.o_klen),
        "gate_up": (gate_up_row_order(d), 1, W),
        "down": (np.arange(W), d.down_splits, d.down_klen),
    }


def pack_plan(d: ExpertDims) -> tuple[list[PackedGemm], int]:
    """Every layer's four Linears in the packed buffer: (entries, total bytes)."""
    out, off = [], 0
    layout = _gemm_layout(d)
    for layer in range(d.depth):
        for site in WEIGHT_SITES:
            order, ks, klen = layout[site]
            tiles = len(order) // TILE_ROWS
            out.append(PackedGemm(layer, site, off, order, tiles, ks, klen))
            off += tiles * ks * TILE_ROWS * klen
    return out, off


def pack_tile_major(w: "np.ndarray | object", entry: PackedGemm):
    """(N, K) weight (numpy or torch, uint8 view of FP8) -> its packed bytes, flat:
    (tile, k slice, K chunk, 64 rows, 16 bytes)."""
    order = entry.row_order
    if hasattr(w, "permute"):  # torch: index on the weight's device
        import torch
        order = torch.as_tensor(order, device=w.device)
    wp = w[order]
    n_t, ks, kc = entry.tiles, entry.k_slices, entry.klen // CHUNK
    wp = wp.reshape(n_t, TILE_ROWS, ks, kc, CHUNK)
    return wp.permute(0, 2, 3, 1, 4).reshape(-1) if hasattr(wp, "permute") else \
        wp.transpose(0, 2, 3, 1, 4).reshape(-1)


def _pages(offset: int, klen: int) -> tuple[tuple[int, int], ...]:
    pages, k = [], 0
    while k < klen:
        kp = min(PAGE_K, klen - k)
        pages.append((offset + k * TILE_ROWS, kp * TILE_ROWS))
        k += kp
    return tuple(pages)


def k_slice(t: Task) -> int:
    """Which K slice of its GEMM a split-K task (O, down) computes."""
    return t.k0 // t.klen


def combine_o_slices(d: ExpertDims, tile: int) -> tuple[int, int]:
    """The O K-slices (heads // (o_klen / head_dim)) of combine task ``tile``'s first and
    last row (combine rows are head * horizon + token, COMBINE_ITEMS / (head_dim /
    COMBINE_COLS) rows a task; the padding past the last row belongs to the last)."""
    heads_per_slice = d.o_klen // d.head_dim
    first = tile * d.combine_rows
    last = min(first + d.combine_rows, d.attn_rows) - 1
    return (first // d.horizon // heads_per_slice, last // d.horizon // heads_per_slice)


def combine_groups_align(d: ExpertDims) -> bool:
    """Whether every combine task's rows lie in one O K-slice (then an O task can wait for
    its slice's combine tasks alone)."""
    return all(a == b for a, b in (combine_o_slices(d, i) for i in range(d.combine_tasks)))


def build_schedule(d: ExpertDims, blocks: int) -> Schedule:
    """The step's phases dealt onto ``blocks`` persistent blocks."""
    reason = unsupported_reason(d)
    if reason:
        raise ValueError(f"expert megakernel: {reason}")
    plan = {(e.layer, e.site): e for e in pack_plan(d)[0]}
    sched = Schedule(blocks)
    norm_tasks = -(-d.horizon // NORM_TOKENS)
    attn_blocks = -(-d.attn_rows // ATTN_ROWS)

    def gemm(op: int, layer: int, site: str) -> list[Task]:
        e = plan[(layer, site)]
        tile_bytes = TILE_ROWS * e.klen
        return [Task(op, layer, tile, ks * e.klen, e.klen,
                     _pages(e.offset + (tile * e.k_slices + ks) * tile_bytes, e.klen))
                for tile in range(e.tiles) for ks in range(e.k_slices)]

    def norm(op: int, layer: int) -> list[Task]:
        return [Task(op, layer, NORM_TOKENS * i) for i in range(norm_tasks)]

    by_o_slice = d.grouped_deps and combine_groups_align(d)
    combine_slice = (lambda t: combine_o_slices(d, t.tile)[0]) if by_o_slice else None
    o_slice = k_slice if by_o_slice else None
    gate_up_slice = (lambda t: t.tile * TILE_ROWS // 2 // d.down_klen) if d.grouped_deps else None
    down_slice = k_slice if d.grouped_deps else None
    for layer in range(d.depth):
        sched.add(f"norm_in.{layer}", norm(NORM_IN, layer))
        sched.add(f"qkv.{layer}", gemm(QKV, layer, "qkv"))
        if d.kv_only_last and layer == d.depth - 1:
            return sched
        sched.add(f"attn.{layer}", [Task(ATTN, layer, rb, s) for rb in range(attn_blocks)
                                     for s in range(d.splits)])
        sched.add(f"combine.{layer}", [Task(COMBINE, layer, i) for i in range(d.combine_tasks)],
                  groups=combine_slice)
        sched.add(f"o.{layer}", gemm(O_PROJ, layer, "o"), waits_for_group=o_slice)
        sched.add(f"norm_mid.{layer}", norm(NORM_MID, layer))
        sched.add(f"gate_up.{layer}", gemm(GATE_UP, layer, "gate_up"), groups=gate_up_slice)
        sched.add(f"down.{layer}", gemm(DOWN, layer, "down"), waits_for_group=down_slice)
    sched.add("norm_out", norm(NORM_OUT, d.depth - 1))
    return sched


def task_accesses(d: ExpertDims):
    """What each task reads and writes, as (buffer, cells, mode), for the race check.
    Cells: (token, column) at the granularity the tasks split at."""
    H, W, F, D, heads = d.horizon, d.width, d.mlp, d.head_dim, d.heads
    toks = range(H)

    def splitk_cells(ks: range, f0: int, f1: int, rows=toks):
        """Cells (K split, token, feature) of the O / down partial products."""
        return [(k, r, f) for k in ks for r in rows for f in range(f0, f1)]

    def norm_cells(t0: int, cols: int):
        return [(t, c) for t in range(t0, min(H, t0 + NORM_TOKENS)) for c in range(cols)]

    def fn(t: Task):
        L = t.layer
        if t.op in (NORM_IN, NORM_MID, NORM_OUT):
            rows = range(t.tile, min(H, t.tile + NORM_TOKENS))
            if not (t.op == NORM_IN and L == 0):
                n = d.o_splits if t.op == NORM_MID else d.down_splits
                yield "splitk", splitk_cells(range(n), 0, W, rows), READ
            yield "x", norm_cells(t.tile, 1), MODIFY
            yield ("xn" if t.op == NORM_OUT else "act_w"), norm_cells(t.tile, 1), WRITE
        elif t.op == QKV:
            yield "act_w", [(r, 0) for r in toks], READ
            head = t.tile // (D // TILE_ROWS)
            group = t.tile % (D // TILE_ROWS)
            cols = [group * 32 + i for i in range(32)] + [D // 2 + group * 32 + i for i in range(32)]
            if head < heads:
                yield "q", [(r, head * D + c) for r in toks for c in cols], WRITE
            else:
                buf = "k" if head == heads else "v"
                yield f"{buf}{L}", [(r, c) for r in toks for c in cols], WRITE
        elif t.op == ATTN:
            rows = range(t.tile * ATTN_ROWS, min(d.attn_rows, (t.tile + 1) * ATTN_ROWS))
            yield "q", [(r // heads, (r % heads) * D + c) for r in rows for c in range(0, D, 32)], READ
            yield f"k{L}", [(r, c) for r in toks for c in range(0, D, 32)], READ
            yield f"v{L}", [(r, c) for r in toks for c in range(0, D, 32)], READ
            yield "part", [(t.k0, r // heads, r % heads) for r in rows], WRITE
        elif t.op == COMBINE:
            items = range(t.tile * COMBINE_ITEMS, (t.tile + 1) * COMBINE_ITEMS)
            # combine row = head * H + token (attn_combine_item), COMBINE_COLS columns an item
            per_row = D // COMBINE_COLS
            rows = sorted({i // per_row for i in items if i // per_row < d.attn_rows})
            yield "part", [(s, r % H, r // H) for s in range(d.splits) for r in rows], READ
            yield "act_attn", [(i // per_row % H,
                                (i // per_row // H) * D + COMBINE_COLS * (i % per_row))
                               for i in items if i // per_row < d.attn_rows], WRITE
        elif t.op == O_PROJ:
            yield "act_attn", [(r, c) for r in toks
                               for c in range(t.k0, t.k0 + t.klen, COMBINE_COLS)], READ
            yield "splitk", splitk_cells(range(k_slice(t), k_slice(t) + 1),
                                         t.tile * TILE_ROWS, (t.tile + 1) * TILE_ROWS), WRITE
        elif t.op == GATE_UP:
            yield "act_w", [(r, 0) for r in toks], READ
            yield "act_mlp", [(r, t.tile * 32 + c) for r in toks for c in range(32)], WRITE
        elif t.op == DOWN:
            yield "act_mlp", [(r, c) for r in toks for c in range(t.k0, t.k0 + t.klen)], READ
            yield "splitk", splitk_cells(range(k_slice(t), k_slice(t) + 1),
                                         t.tile * TILE_ROWS, (t.tile + 1) * TILE_ROWS), WRITE
    return fn


def block_table_bytes(t: dict[str, np.ndarray]) -> int:
    """Bytes of the largest block's own tables (its task rows and page entries) in
    ``Schedule.tables()`` ``t``: the kernel copies each block's into shared memory at launch
    (scheduler.cuh block_tables) and refuses a launch where they do not fit."""
    tasks, pages = np.diff(t["task_start"]), np.diff(t["page_start"])
    return int((tasks * t["tasks"].itemsize * t["tasks"].shape[1]
                + pages * t["pages"].itemsize * t["pages"].shape[1]).max())


def kernel_sizes(d: ExpertDims, sched: Schedule, tables: dict[str, np.ndarray],
                 rope_rows: int) -> dict[str, int]:
    """The ``sizes`` dict of the expert_megakernel binding (besides the pointers);
    ``tables``: ``sched.tables()``, built once by the caller, who uploads them."""
    return {"blocks": sched.blocks, "tpad": d.tpad, "counters": sched.counters, "H": d.horizon,
            "W": d.width, "F": d.mlp, "heads": d.heads, "kv_heads": d.kv_heads,
            "head_dim": d.head_dim, "cache_rows": d.cache_rows, "splits": d.splits,
            "depth": d.depth, "o_splits": d.o_splits, "down_splits": d.down_splits,
            "max_klen": d.max_klen, "rope_rows": rope_rows,
            "table_bytes": block_table_bytes(tables)}
