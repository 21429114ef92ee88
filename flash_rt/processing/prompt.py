"""Prompt text for Pi0.5 (task + discretised state) and Pi0 (task only), as openpi writes it."""
from __future__ import annotations

from typing import Sequence

import numpy as np

NUM_STATE_BINS = 256
STATE_RANGE = (-1.0, 1.0)  # normalised state range the bins cover
# Left edges of the bins: value v lands in bin i when EDGES[i] <= v < EDGES[i + 1].
_BIN_EDGES = np.linspace(STATE_RANGE[0], STATE_RANGE[1], NUM_STATE_BINS + 1)[:-1]


def discretize_state(norm_state: np.ndarray) -> np.ndarray:
    """Normalised state -> int bins ``digitize(s, linspace(-1, 1, 257)[:-1]) - 1``.

    No clipping, as in openpi: values in [-1, 1] give 0..255, values above 1 give 255 and
    values below -1 give -1 (which then appears as "-1" in the prompt). NaN has no bin and
    raises.
    """
    s = np.asarray(norm_state, dtype=np.float64)
    if np.isnan(s).any():
        raise ValueError(f"cannot discretise NaN state: {s}")
    return (np.digitize(s, _BIN_EDGES) - 1).astype(np.int64)


def clean_task(task: str) -> str:
    """openpi's task cleaning: strip, '_' -> ' ', newline -> ' '."""
    return task.strip().replace("_", " ").replace("\n", " ")


def pi05_prompt(task: str, state_bins: Sequence[int] | np.ndarray) -> str:
    """``"Task: {task}, State: {b1 b2 ...};\\nAction: "``; pass only the robot's real dims."""
    bins = np.asarray(state_bins)
    if bins.ndim != 1 or (bins.size and not np.issubdtype(bins.dtype, np.integer)):
        raise ValueError(f"state_bins must be a 1-D integer sequence, got {bins.dtype} {bins.shape}")
    state_str = " ".join(str(int(b)) for b in bins)
    return f"Task: {clean_task(task)}, State: {state_str};\nAction: "


# openpi tokenises Pi0's prompt as encode(task, bos) + encode("\n"): the newline is a
# separate piece without BOS, which can differ from encoding "task\n" in one go.
PI0_PROMPT_SUFFIX = "\n"


def pi0_prompt(task: str) -> str:
    """The cleaned task; encode it with BOS, then ``PI0_PROMPT_SUFFIX`` without."""
    return clean_task(task)


__all__ = ["NUM_STATE_BINS", "PI0_PROMPT_SUFFIX", "clean_task", "discretize_state", "pi0_prompt", "pi05_prompt"]
