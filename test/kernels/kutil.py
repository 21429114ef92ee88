"""Helpers of the kernel tests: Pi0.5 configs, guarded buffers, FP8 references."""
from __future__ import annotations

import torch

from flash_rt.configs import load_config

FULL = load_config("pi05", "full")
TINY = load_config("pi05", "tiny")

GUARD_BYTES = 4096
SENTINEL = 0x5A


def ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class Guarded:
    """A tensor placed between two sentinel-filled guard regions (out-of-bounds detector)."""

    def __init__(self, shape, dtype, fill=None):
        n = 1
        for s in shape:
            n *= s
        esize = torch.empty((), dtype=dtype).element_size()
        nbytes = n * esize
        self.raw = torch.full((GUARD_BYTES * 2 + nbytes,), SENTINEL, dtype=torch.uint8, device="cuda")
        self.t = self.raw[GUARD_BYTES:GUARD_BYTES + nbytes].view(dtype).view(*shape)
        if fill is not None:
            self.t.copy_(fill)

    def check(self):
        torch.cuda.synchronize()
        lo, hi = self.raw[:GUARD_BYTES], self.raw[-GUARD_BYTES:]
        assert bool((lo == SENTINEL).all()), "kernel wrote before the start of its output"
        assert bool((hi == SENTINEL).all()), "kernel wrote past the end of its output"


def fp8_ref(x: torch.Tensor, s: float | torch.Tensor) -> torch.Tensor:
    """Reference quantisation: sat(x / s) to float8_e4m3fn, round to nearest even.

    s goes to x's device as a tensor: torch divides by a Python or CPU scalar as a
    multiplication by its reciprocal, which is not the IEEE division the kernels do.
    """
    st = torch.as_tensor(s, dtype=torch.float32).to(x.device)
    return (x.float() / st).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


def fp8_close(out: torch.Tensor, ref_f32: torch.Tensor, s: float, ulps: int = 1) -> None:
    """FP8 outputs within `ulps` representable steps of the fp32 reference / s."""
    got = out.float()
    want = (ref_f32 / s).clamp(-448, 448)
    # one e4m3 step at |v| is 2^(floor(log2|v|) - 3) (min normal 2^-6, subnormal step 2^-9)
    step = torch.exp2(torch.floor(torch.log2(want.abs().clamp_min(2.0 ** -6))) - 3)
    err = (got - want).abs()
    bad = err > ulps * step + 1e-6
    assert not bool(bad.any()), (
        f"{int(bad.sum())} of {bad.numel()} fp8 values off by more than {ulps} step(s); "
        f"max err {float(err.max()):.4g}")


def scalar(v: float) -> torch.Tensor:
    return torch.tensor([v], dtype=torch.float32, device="cuda")


def gate_up_halves(gu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 2F) gate/up columns in the engine's interleave (GATE_UP_GROUP at a time) ->
    (gate, up), each (M, F)."""
    from flash_rt.core.weight_spec import split_interleaved
    from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP
    gate, up = split_interleaved(gu, 2, GATE_UP_GROUP, dim=-1)
    return gate, up


def gate_up_interleaved(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`gate_up_halves`."""
    from flash_rt.core.weight_spec import interleave_rows
    from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP
    return interleave_rows([gate.T, up.T], GATE_UP_GROUP).T.contiguous()
