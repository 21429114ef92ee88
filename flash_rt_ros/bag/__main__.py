"""flash_rt_bag: rosbag replay precision checks (see docs/precision.md).

    python -m flash_rt_ros.bag make-episode EPISODE
    python -m flash_rt_ros.bag record-reference EPISODE --checkpoint CKPT --out REF
    python -m flash_rt_ros.bag replay EPISODE --checkpoint CKPT --hardware hopper --out RUN
    python -m flash_rt_ros.bag compare REF RUN

record-reference and replay take --model pi05 | pi0 | groot (default: the params file's).

Exit status: 0 success (compare: pass), 1 compare below the thresholds, 2 an error (an
unreadable bag, a bad configuration, a node that failed), with one line saying why.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from flash_rt.configs import ALL_MODELS

EXIT_FAIL, EXIT_ERROR = 1, 2


def _param(text: str) -> tuple[str, object]:
    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:=VALUE, got {text!r}")
    return name, yaml.safe_load(value)


def _node_options(ap: argparse.ArgumentParser) -> None:
    """What the node needs: its params file, the checkpoint, the prompt and the seed."""
    ap.add_argument("bag", help="input rosbag2 recording (directory, or a .mcap/.db3 file)")
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory")
    ap.add_argument("--params", default=None,
                    help="the node's ROS params file (default: config/<model>_cpu.yaml); "
                         "topics, joint names, rate, trigger and staleness come from it")
    ap.add_argument("--model", default=None, choices=ALL_MODELS,
                    help="the policy (default: the params file's model, pi05 without "
                         "--params)")
    ap.add_argument("-p", "--param", action="append", type=_param, default=[],
                    metavar="NAME:=VALUE", help="override one node parameter (repeatable)")
    ap.add_argument("--prompt", default=None,
                    help="task prompt (default: first std_msgs/String on --prompt-topic, "
                         "else the params file's prompt)")
    ap.add_argument("--prompt-topic", default="/prompt")
    ap.add_argument("--seed", type=int, default=None,
                    help="base noise seed (default: the params file's seed); each chunk uses "
                         "a hash of (seed, observation stamp)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="flash_rt_bag", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    sub = ap.add_subparsers(dest="command", required=True)

    ep = sub.add_parser("make-episode", help="write a realistic synthetic episode bag")
    ep.add_argument("out", help="bag directory to create")
    ep.add_argument("--cameras", type=int, default=3)
    ep.add_argument("--width", type=int, default=640)
    ep.add_argument("--height", type=int, default=480)
    ep.add_argument("--duration", type=float, default=5.0, help="seconds")
    ep.add_argument("--camera-rate", type=float, default=30.0, help="frames per second")
    ep.add_argument("--joint-rate", type=float, default=50.0, help="JointState messages per s")
    ep.add_argument("--encodings", nargs="+", default=["rgb8"],
                    help="per camera, the last repeats: rgb8 bgr8 mono8 yuv422 jpeg png "
                         "(jpeg/png: CompressedImage on <topic>/compressed)")
    ep.add_argument("--joints", nargs="+", default=None, help="joint names (default joint0..7)")
    ep.add_argument("--prompt", default=None)
    ep.add_argument("--seed", type=int, default=0, help="transport-jitter seed")
    ep.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ep.add_argument("--overwrite", action="store_true")

    rr = sub.add_parser("record-reference",
                        help="run the reference on the bag's observations; write its chunks")
    _node_options(rr)
    rr.add_argument("--reference", choices=("cpu", "cuda-fp32", "cuda-bf16"), default="cpu",
                    help="FP32 on the CPU, FP32 on a CUDA device (TF32 off), or bf16 on CUDA")
    rr.add_argument("--out", default=None, help="output bag (default: <bag>.reference)")
    rr.add_argument("--topic", default="/reference/action_chunk")

    rp = sub.add_parser("replay", help="replay the bag through an engine; record its chunks")
    _node_options(rp)
    rp.add_argument("--hardware", default="auto",
                    choices=("auto", "cpu", "hopper", "thor", "rtx_sm120"),
                    help="engine: flash_rt.load_model(..., hardware=...)")
    rp.add_argument("--mode", choices=("direct", "node"), default="direct",
                    help="direct: call the frontend (fast, deterministic); node: the live "
                         "ROS 2 node over DDS at bag timing on /clock (use_sim_time)")
    rp.add_argument("--out", default=None, help="output bag (default: <bag>.replay-<mode>)")
    rp.add_argument("--rate", type=float, default=1.0,
                    help="node mode: playback speed (0.5 = half speed, for slow engines)")
    rp.add_argument("--no-lockstep", dest="lockstep", action="store_false",
                    help="node mode: play free-running at bag timing; by default the clock "
                         "stands still at each tick until its chunk arrives")
    rp.add_argument("--chunk-timeout-s", type=float, default=120.0,
                    help="node mode, lockstep: longest wait for one chunk")
    rp.add_argument("--settle-s", type=float, default=3.0,
                    help="node mode: after the bag, wait until no chunk came for this long")
    rp.add_argument("--startup-timeout-s", type=float, default=300.0,
                    help="node mode: how long the node may take to load and subscribe")
    rp.add_argument("--node-log", default=None, help="node mode: the node's log file "
                                                     "(default: <out>.node.log)")

    cp = sub.add_parser("compare", help="compare engine chunks with reference chunks")
    cp.add_argument("reference", help="bag written by record-reference")
    cp.add_argument("engine", help="bag written by replay")
    cp.add_argument("--min-cosine", type=float, default=0.999,
                    help="fail if any matched chunk's cosine is below (default 0.999)")
    cp.add_argument("--max-abs", type=float, default=None,
                    help="fail if any matched chunk's max |error| is above (default: off)")
    cp.add_argument("--min-matched", type=int, default=1,
                    help="fail with fewer matched chunks (default 1)")
    cp.add_argument("--worst", type=int, default=5, help="worst chunks listed in the report")
    cp.add_argument("--report", default=None, help="JSON report (default: <engine>.report.json)")
    cp.add_argument("--plot", default=None, help="PNG plot (default: <engine>.report.png)")
    cp.add_argument("--no-plot", action="store_true")
    return ap.parse_args(argv)


def _sibling(bag: str, suffix: str) -> Path:
    path = Path(bag.rstrip("/"))
    return path.parent / f"{path.name}{suffix}"


def _node_setup(args, **extra):
    """The node's parameters for this run (params file, -p overrides, checkpoint, seed,
    ``seed_mode: stamp``, the resolved prompt), and the prompt."""
    from flash_rt_ros.bag.observations import resolve_prompt
    from flash_rt_ros.bag.reader import BagReader
    from flash_rt_ros.params import DEFAULTS, load_params_file
    from flash_rt_ros.processes import find_config

    params_file = (Path(args.params) if args.params else
                   find_config(f"{args.model or DEFAULTS['model']}_cpu.yaml"))
    overrides = dict(args.param)
    overrides.update(checkpoint_dir=str(args.checkpoint), seed_mode="stamp", **extra)
    if args.model:
        overrides["model"] = args.model
    if args.seed is not None:
        overrides["seed"] = args.seed
    p = load_params_file(params_file, overrides)
    with BagReader(args.bag) as reader:
        prompt = resolve_prompt(reader, args.prompt, args.prompt_topic, p)
    return dataclasses.replace(p, prompt=prompt), prompt


def cmd_make_episode(args) -> int:
    from flash_rt_ros.bag.episode import EpisodeSpec, write_episode

    spec = EpisodeSpec(cameras=args.cameras, width=args.width, height=args.height,
                       duration_s=args.duration, camera_rate_hz=args.camera_rate,
                       joint_rate_hz=args.joint_rate, encodings=tuple(args.encodings),
                       seed=args.seed)
    if args.joints:
        spec.joint_names = tuple(args.joints)
    if args.prompt is not None:
        spec.prompt = args.prompt
    summary = write_episode(args.out, spec, storage=args.storage, overwrite=args.overwrite)
    print(json.dumps(summary, indent=1))
    return 0


def _record(args, policy, provenance, p, prompt, out, topic) -> int:
    from flash_rt_ros.bag.engines import num_views
    from flash_rt_ros.bag.offline import record_chunks

    summary = record_chunks(args.bag, p, policy, provenance, prompt, out, topic, num_views(p),
                            storage=args.storage, overwrite=args.overwrite)
    print(json.dumps(summary, indent=1))
    if not summary["chunks"]:
        print(f"error: no chunk recorded; the node's counters: {summary['counters']}",
              file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_record_reference(args) -> int:
    from flash_rt_ros.bag.engines import load_reference

    p, prompt = _node_setup(args)
    policy, provenance = load_reference(args.reference, p, args.checkpoint)
    out = args.out or _sibling(args.bag, ".reference")
    return _record(args, policy, provenance, p, prompt, out, args.topic)


def cmd_replay(args) -> int:
    p, prompt = _node_setup(args, hardware=args.hardware)
    out = args.out or _sibling(args.bag, f".replay-{args.mode}")
    if args.mode == "direct":
        from flash_rt_ros.bag.engines import load_engine

        policy, provenance = load_engine(args.hardware, p, args.checkpoint)
        return _record(args, policy, provenance, p, prompt, out, "/replay/action_chunk")
    from flash_rt_ros.bag.live import replay_through_node

    summary = replay_through_node(
        args.bag, p, out, rate=args.rate, lockstep=args.lockstep,
        chunk_timeout_s=args.chunk_timeout_s, settle_s=args.settle_s,
        startup_timeout_s=args.startup_timeout_s, storage=args.storage,
        overwrite=args.overwrite, node_log=args.node_log,
        custom={"flash_rt.hardware": args.hardware, "flash_rt.prompt": prompt,
                "flash_rt.seed": p.seed})
    print(json.dumps(summary, indent=1))
    if not summary["chunks"]:
        print(f"error: the node published no chunk; see {summary['node_log']}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_compare(args) -> int:
    from flash_rt_ros.bag.compare import compare, summary_lines
    from flash_rt_ros.bag.reader import BagReader

    with BagReader(args.reference) as ref, BagReader(args.engine) as eng:
        reference, engine = ref.chunks(), eng.chunks()
        provenance = {"reference": ref.custom_data, "engine": eng.custom_data}
    report, ranked = compare(reference, engine, min_cosine=args.min_cosine,
                             max_abs=args.max_abs, min_matched=args.min_matched,
                             worst=args.worst)
    report["inputs"] = {"reference_bag": str(args.reference), "engine_bag": str(args.engine)}
    report["provenance"] = provenance
    report_path = Path(args.report) if args.report else _sibling(args.engine, ".report.json")
    report_path.write_text(json.dumps(report, indent=1))
    for line in summary_lines(report):
        print(line)
    print(f"report: {report_path}")
    if not args.no_plot:
        from flash_rt_ros.bag.plot import write_plot

        plot_path = Path(args.plot) if args.plot else _sibling(args.engine, ".report.png")
        eng_p = provenance["engine"]
        title = (f"{eng_p.get('flash_rt.hardware', '?')} vs reference "
                 f"{provenance['reference'].get('flash_rt.reference', '?')}")
        write_plot(plot_path, report, ranked, title=title)
        print(f"plot: {plot_path}")
    return 0 if report["verdict"] == "pass" else EXIT_FAIL


COMMANDS = {"make-episode": cmd_make_episode, "record-reference": cmd_record_reference,
            "replay": cmd_replay, "compare": cmd_compare}


def main(argv=None) -> int:
    args = parse_args(argv)
    from flash_rt_ros.bag.reader import BagError

    try:
        return COMMANDS[args.command](args)
    except ImportError as exc:  # a missing dependency, e.g. ROS 2 for replay --mode node
        ros = getattr(args, "mode", None) == "node" and (exc.name or "").split(".")[0] in (
            "rclpy", "flash_rt_ros_msgs", "rosgraph_msgs", "sensor_msgs", "std_msgs")
        hint = ("source scripts/ros_env.sh, or a ROS 2 install's setup.bash" if ros else
                "pip install -r requirements.txt")
        print(f"error: {exc} ({hint})", file=sys.stderr)
        return EXIT_ERROR
    except (BagError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
