"""The prefix MLP's gate/up + GeGLU: cuBLASLt FP8 GEMM (bf16 out) + ``geglu_fp8`` against
the fused ``gemm_fp8_geglu`` (sm_90a), issue 15.

    python bench/gemm_geglu.py --rows 712 968 --out gemm_geglu.json

Each path runs the prefix's MLP inputs through ``--layers`` distinct weights (the layers'
weights stream from HBM as in the forward pass, not from L2), captured in one CUDA Graph;
per-layer GPU time = replay time / layers, p50 / p99 over ``--reps`` replays. The GEMM
of the unfused path is autotuned over the same weights first (as the engine does) and uses
fast accumulation (Hopper's choice for K <= 2048). Agreement: the FP8 outputs of both paths
byte for byte, and each one's cosine against an fp32 torch GeGLU of the same FP8 operands.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from flash_rt import kernels  # noqa: E402
from flash_rt.configs import load_config  # noqa: E402
from flash_rt.core.weight_spec import split_interleaved  # noqa: E402
from flash_rt.models.common.paligemma_pipeline.dims import GATE_UP_GROUP  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels import timed  # noqa: E402  (bench/kernels.py)

WS_BYTES = 32 << 20
FP8 = torch.float8_e4m3fn


def q8(x, s):
    return (x.float() / s).clamp(-448, 448).to(FP8)


def replay_us(launch, layers: int, reps: int) -> dict:
    """p50 / p99 / mean GPU microseconds per layer: ``launch(layer, stream)`` for every layer
    in turn, replayed from one CUDA graph (bench/kernels.py's ``timed``)."""
    order = itertools.cycle(range(layers))
    r = timed(lambda stream: launch(next(order), stream), layers, reps)
    return {"p50": r["p50_us"], "p99": r["p99_us"], "mean": r["mean_us"]}


def reference(a8, sa, w8, sw, s_out):
    """fp32 GeGLU of the dequantised FP8 operands, w in the gate/up interleave."""
    gate, up = split_interleaved((a8.float() * sa) @ (w8.float() * sw).T, 2, GATE_UP_GROUP, dim=-1)
    return F.gelu(gate, approximate="tanh") * up / s_out


def cosine(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def run_rows(fk, M: int, K: int, Fd: int, layers: int, reps: int, configs: list[int]) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(M)
    a = torch.randn(M, K, device="cuda", generator=gen)
    sa = torch.tensor([float(a.abs().max()) / 448], device="cuda")
    a8 = q8(a, sa)
    ws = [torch.randn(2 * Fd, K, device="cuda", generator=gen) / K ** 0.5 for _ in range(layers)]
    sw = [torch.tensor([float(w.abs().max()) / 448], device="cuda") for w in ws]
    w8 = [q8(w, s) for w, s in zip(ws, sw)]
    del ws
    ref = reference(a8, sa, w8[0], sw[0], 1.0)
    s_out = torch.tensor([float(ref.abs().max()) / 448], device="cuda")
    ws_buf = torch.empty(WS_BYTES, dtype=torch.uint8, device="cuda")
    gu = torch.empty(M, 2 * Fd, device="cuda", dtype=torch.bfloat16)
    out_seq = torch.empty(M, Fd, device="cuda", dtype=FP8)
    out_fused = torch.empty(M, Fd, device="cuda", dtype=FP8)
    p = lambda t: t.data_ptr()  # noqa: E731
    tune = fk.gemm_fp8_autotune(p(a8), p(w8[0]), p(gu), M, 2 * Fd, K, p(sa), p(sw[0]), 0,
                                workspace=p(ws_buf), workspace_bytes=WS_BYTES, fast_accum=True,
                                iters=10, max_candidates=64, b_cycle=[p(w) for w in w8[1:]])

    def sequence(i, stream):
        fk.gemm_fp8(p(a8), p(w8[i]), p(gu), M, 2 * Fd, K, p(sa), p(sw[i]), stream,
                    workspace=p(ws_buf), workspace_bytes=WS_BYTES, fast_accum=True)
        fk.geglu_fp8(p(gu), p(out_seq), p(s_out), M, Fd, stream)

    def fused(config):
        def launch(i, stream):
            fk.gemm_fp8_geglu(p(a8), p(w8[i]), p(out_fused), M, Fd, K, p(sa), p(sw[i]),
                              p(s_out), p(ws_buf), WS_BYTES, stream, config)
        return launch

    row = {"M": M, "K": K, "F": Fd, "layers": layers, "cublaslt_autotune": tune,
           "sequence_us": replay_us(sequence, layers, reps), "fused": {}}
    stream = torch.cuda.current_stream().cuda_stream
    sequence(0, stream)
    ref_q = ref / s_out
    for c in configs:
        entry = {}
        try:
            entry["us"] = replay_us(fused(c), layers, reps)
            fused(c)(0, stream)
            torch.cuda.synchronize()
            same = (out_fused.view(torch.uint8) == out_seq.view(torch.uint8)).float().mean()
            entry.update(
                identical_bytes=float(same),
                max_abs_vs_sequence=float((out_fused.float() - out_seq.float()).abs().max()),
                cosine_vs_sequence=cosine(out_fused.float(), out_seq.float()),
                cosine_vs_fp32=cosine(out_fused.float(), ref_q))
        except (RuntimeError, ValueError) as exc:
            entry["error"] = str(exc).splitlines()[0]
        row["fused"][str(c)] = entry
    row["sequence_cosine_vs_fp32"] = cosine(out_seq.float(), ref_q)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[712, 968])
    ap.add_argument("--layers", type=int, default=17)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--configs", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    fk = kernels.load()
    p = load_config("pi05", "full").prefix
    results = []
    for M in args.rows:
        r = run_rows(fk, M, p.width, p.mlp_dim, args.layers, args.reps, args.configs)
        results.append(r)
        fused = {c: (round(e["us"]["p50"], 2) if "us" in e else e.get("error"))
                 for c, e in r["fused"].items()}
        print(json.dumps({"M": M, "sequence_p50_us": round(r["sequence_us"]["p50"], 2),
                          "fused_p50_us": fused,
                          "agreement": {c: {k: e.get(k) for k in ("identical_bytes",
                                                                  "cosine_vs_sequence",
                                                                  "cosine_vs_fp32")}
                                        for c, e in r["fused"].items()},
                          "sequence_cosine_vs_fp32": r["sequence_cosine_vs_fp32"]}), flush=True)
    report = {"device": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(), "built_archs": fk.built_archs(),
              "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
