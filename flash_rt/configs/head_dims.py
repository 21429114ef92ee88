"""Attention widths shared by the LLM configs (Gemma's and Qwen's)."""
from __future__ import annotations


class HeadDims:
    """``q_dim`` / ``kv_dim`` of a config with ``num_heads``, ``num_kv_heads``, ``head_dim``."""

    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim
