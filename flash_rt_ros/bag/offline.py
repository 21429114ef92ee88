"""Record the chunks a policy computes on a bag's observations, without DDS (no rclpy).

Used by ``record-reference`` (the reference policy, topic ``/reference/action_chunk``) and
by ``replay --mode direct`` (the engine, ``/replay/action_chunk``): the same observations,
ticks and seeds (``seed_mode: stamp``) in both, so chunks pair up by observation stamp.
Each chunk is logged at its tick time; ``header.stamp`` is its observation time.
"""
from __future__ import annotations

import sys
import time

from flash_rt_ros.bag.observations import OfflineNode
from flash_rt_ros.bag.reader import BagReader
from flash_rt_ros.bag.writer import BagWriter
from flash_rt_ros.chunks import ChunkMaker
from flash_rt_ros.params import NodeParams


def record_chunks(bag, p: NodeParams, policy, provenance: dict, prompt: str, out, topic: str,
                  num_views: int, storage: str = "mcap", overwrite: bool = False,
                  custom: dict | None = None, log=sys.stderr) -> dict:
    """Run ``policy`` at every tick of the bag; write the chunks to ``out``. Returns a
    summary (chunk count, the node's skip/malformed counters, wall time)."""
    node = OfflineNode(p)
    maker = ChunkMaker(policy, p, num_views, provenance.get("hardware", "cpu"),
                       provenance.get("checkpoint_id", ""))
    meta = {"flash_rt.seed": p.seed, "flash_rt.seed_mode": p.seed_mode,
            "flash_rt.prompt": prompt, "flash_rt.source_bag": str(bag),
            **{f"flash_rt.{k}": v for k, v in provenance.items()}, **(custom or {})}
    t0 = time.perf_counter()
    with BagReader(bag) as reader, BagWriter(out, storage, meta, overwrite) as writer:
        for tick_ns, obs in node.observations(reader):
            rec = maker.make(obs, prompt)
            # As the node measures it, with the bag's clock standing still during predict.
            rec.node_latency_ms = (tick_ns - obs.stamp_ns) / 1e6 + rec.inference_latency_ms
            writer.write_chunk(topic, tick_ns, rec)
            if maker.sequence % 10 == 0:
                print(f"  {maker.sequence} chunks ({rec.inference_latency_ms:.0f} ms each)",
                      file=log, flush=True)
        counters = node.counters.snapshot()
        for key, value in sorted(counters.items()):
            writer.set_custom(f"flash_rt.counters.{key}", value)
    return {"chunks": maker.sequence, "counters": counters,
            "wall_s": round(time.perf_counter() - t0, 2), "out": str(out), "topic": topic}
