"""Where Pi0.5's per-step adaRMS modulation rows live in the converted weights.

The weight spec precomputes ``ex.mod``, a float32 table (steps, 2 * depth + 1, 3 * width):
row 2l = layer l's input norm, 2l + 1 its post-attention norm, 2 * depth the final norm;
columns [scale | shift | gate]. The kernel sequence and the persistent kernel both read it.
"""
from __future__ import annotations

from typing import Any

MOD_TABLE = "ex.mod"


def mod_rows(d: Any) -> int:
    """Norm rows per denoising step (two per layer and the final norm)."""
    return 2 * d.depth + 1


def mod_row(ctx: Any, step: int, row: int) -> int:
    """Pointer to the adaRMS [scale | shift | gate] row of (step, norm row)."""
    d = ctx.d
    return ctx.w[MOD_TABLE] + 4 * (step * mod_rows(d) + row) * 3 * d.ex_width
