"""Pair engine chunks with reference chunks by observation, score them, give a verdict.

Pairing: an engine chunk is compared with the reference chunk of the same observation
stamp (``header.stamp``) only if they were computed from the same inputs: the same
camera and state stamps, the same state vector, prompt, seed and shape. Otherwise it is
reported, never compared and never silently dropped:

- ``engine_without_reference``: no reference chunk has its observation stamp (e.g. a
  tick the live node saw at a different time);
- ``input_mismatch``: a reference chunk has the stamp but other inputs (a frame still in
  flight when the live node ticked), with the reason;
- ``reference_without_engine``: reference observations the engine produced no chunk for
  (ticks the live node skipped while a predict was running).

Scores, per pair, on the un-normalised actions flattened over (horizon, dims): cosine
similarity and max |engine - reference|; per action dim over all pairs: max |error|,
RMSE and cosine. The verdict fails when fewer than ``min_matched`` pairs exist, when any
pair's cosine is below ``min_cosine``, or (if set) when any max |error| exceeds ``max_abs``.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from flash_rt.core.metrics import cosine
from flash_rt.core.metrics import max_abs as max_abs_error  # `max_abs` is a threshold below
from flash_rt_ros.chunks import ChunkRecord

DEFAULT_MIN_COSINE = 0.999


@dataclass
class Pair:
    ref: ChunkRecord
    eng: ChunkRecord
    cosine: float
    max_abs: float


def _mismatch(ref: ChunkRecord, eng: ChunkRecord) -> str:
    """Why two chunks of one observation stamp are not comparable ('' if they are)."""
    if tuple(ref.image_stamps_ns) != tuple(eng.image_stamps_ns):
        return "camera stamps differ"
    if ref.state_stamp_ns != eng.state_stamp_ns:
        return "state stamp differs"
    if not np.array_equal(ref.state, eng.state):
        return "state values differ"
    if ref.prompt != eng.prompt:
        return f"prompt differs ({eng.prompt!r} vs {ref.prompt!r})"
    if ref.seed != eng.seed:
        return f"seed differs ({eng.seed} vs {ref.seed}: was seed_mode stamp used?)"
    if ref.actions.shape != eng.actions.shape:
        return f"actions shape {eng.actions.shape} vs {ref.actions.shape}"
    return ""


def match(reference: list[ChunkRecord], engine: list[ChunkRecord]):
    """(pairs, engine_without_reference, input_mismatch [(chunk, reason)],
    reference_without_engine)."""
    by_stamp: dict[int, ChunkRecord] = {}
    for r in reference:
        by_stamp.setdefault(r.stamp_ns, r)
    pairs, orphans, mismatched, used = [], [], [], set()
    for e in engine:
        r = by_stamp.get(e.stamp_ns)
        if r is None:
            orphans.append(e)
            continue
        reason = _mismatch(r, e)
        if reason:
            mismatched.append((e, reason))
            continue
        used.add(r.stamp_ns)
        pairs.append(Pair(r, e, cosine(r.actions, e.actions),
                          max_abs_error(e.actions, r.actions)))
    missing = [r for s, r in sorted(by_stamp.items()) if s not in used]
    return pairs, orphans, mismatched, missing


def _stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    return {"min": float(v.min()), "p5": float(np.percentile(v, 5)),
            "median": float(np.median(v)), "mean": float(v.mean()), "max": float(v.max())}


def per_dim(pairs: list[Pair], joint_names) -> list[dict]:
    if not pairs:
        return []
    ref = np.concatenate([p.ref.actions for p in pairs]).astype(np.float64)
    eng = np.concatenate([p.eng.actions for p in pairs]).astype(np.float64)
    err = eng - ref
    names = list(joint_names) + [""] * ref.shape[1]
    return [{"dim": j, "joint": names[j], "max_abs": float(np.abs(err[:, j]).max()),
             "rmse": float(np.sqrt(np.mean(err[:, j] ** 2))),
             "cosine": cosine(ref[:, j], eng[:, j])} for j in range(ref.shape[1])]


def _chunk_row(p: Pair, t0: int) -> dict:
    return {"stamp_ns": p.ref.stamp_ns, "time_s": round((p.ref.stamp_ns - t0) / 1e9, 6),
            "seed": p.ref.seed, "reference_sequence": p.ref.sequence,
            "engine_sequence": p.eng.sequence, "cosine": p.cosine, "max_abs": p.max_abs}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def versions() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(),
            **{d: _version(d) for d in ("flash_rt_ros", "rosbags", "numpy", "matplotlib")}}


def compare(reference: list[ChunkRecord], engine: list[ChunkRecord], *,
            min_cosine: float = DEFAULT_MIN_COSINE, max_abs: float | None = None,
            min_matched: int = 1, worst: int = 5) -> tuple[dict, list[Pair]]:
    """(report dict, pairs). ``report['verdict']`` is ``pass`` or ``fail``."""
    pairs, orphans, mismatched, missing = match(reference, engine)
    t0 = min([c.stamp_ns for c in reference + engine], default=0)
    cos = [p.cosine for p in pairs]
    err = [p.max_abs for p in pairs]
    reasons = []
    if len(pairs) < min_matched:
        reasons.append(f"only {len(pairs)} matched chunk(s), need at least {min_matched}")
    low = [p for p in pairs if p.cosine < min_cosine]
    if low:
        reasons.append(f"{len(low)} of {len(pairs)} chunk(s) below cosine {min_cosine} "
                       f"(min {min(cos):.6f})")
    if max_abs is not None and pairs and max(err) > max_abs:
        reasons.append(f"max |error| {max(err):.6g} > {max_abs}")
    warnings = []
    ids = {c.checkpoint_id for c in reference} | {c.checkpoint_id for c in engine}
    if len(ids) > 1:
        warnings.append(f"chunks come from different checkpoints: {sorted(ids)}")
    ranked = sorted(pairs, key=lambda p: (p.cosine, -p.max_abs))
    joint_names = reference[0].joint_names if reference else ()
    report = {
        "verdict": "fail" if reasons else "pass",
        "reasons": reasons,
        "warnings": warnings,
        "thresholds": {"min_cosine": min_cosine, "max_abs": max_abs, "min_matched": min_matched},
        "summary": {
            "reference_chunks": len(reference), "engine_chunks": len(engine),
            "matched": len(pairs), "engine_without_reference": len(orphans),
            "input_mismatch": len(mismatched), "reference_without_engine": len(missing),
            "cosine": _stats(cos), "max_abs": _stats(err),
        },
        "per_dim": per_dim(pairs, joint_names),
        "worst": [_chunk_row(p, t0) for p in ranked[:worst]],
        "chunks": [_chunk_row(p, t0) for p in pairs],
        "unmatched": {
            "engine_without_reference": [{"stamp_ns": c.stamp_ns, "sequence": c.sequence}
                                         for c in orphans],
            "input_mismatch": [{"stamp_ns": c.stamp_ns, "sequence": c.sequence, "reason": why}
                               for c, why in mismatched],
            "reference_without_engine": [c.stamp_ns for c in missing],
        },
        "checkpoint_ids": sorted(ids),
        "versions": versions(),
    }
    return report, ranked


def summary_lines(report: dict) -> list[str]:
    """A few human-readable lines for the terminal."""
    s = report["summary"]
    lines = [f"matched {s['matched']} of {s['engine_chunks']} engine chunks "
             f"({s['reference_chunks']} reference; {s['engine_without_reference']} without "
             f"reference, {s['input_mismatch']} with other inputs, "
             f"{s['reference_without_engine']} reference observations not replayed)"]
    if s["cosine"]:
        c, e = s["cosine"], s["max_abs"]
        lines.append(f"cosine min {c['min']:.6f}  p5 {c['p5']:.6f}  median {c['median']:.6f}  "
                     f"mean {c['mean']:.6f};  max |error| {e['max']:.6g}")
    for w in report["worst"][:3]:
        lines.append(f"  worst: t={w['time_s']:.3f} s seed {w['seed']} cosine "
                     f"{w['cosine']:.6f} max |error| {w['max_abs']:.6g}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    verdict = report["verdict"].upper()
    lines.append(verdict + (": " + "; ".join(report["reasons"]) if report["reasons"] else
                            f" (cosine >= {report['thresholds']['min_cosine']})"))
    return lines
