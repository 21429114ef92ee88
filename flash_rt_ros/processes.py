"""Child processes of the demo and the overhead benchmark: the synthetic publisher and the
policy node, each in its own process group, stopped with SIGINT (SIGKILL as a last resort)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def find_config(name: str) -> Path:
    """config/<name> from a source checkout, else from the installed share directory."""
    for base in (Path(__file__).resolve().parents[1] / "config",
                 Path(sys.prefix) / "share" / "flash_rt_ros" / "config"):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(f"config/{name} not found in the source tree or {sys.prefix}/share")


def make_tiny_checkpoint(out_dir: str) -> str:
    """A tiny Pi0.5 checkpoint, generated in a child process (keeps torch out of this one)."""
    subprocess.run([sys.executable, "-m", "flash_rt.tools.make_checkpoint", "--model", "pi05",
                    "--preset", "tiny", "--out", out_dir], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out_dir


def camera_topics(n: int, encoding: str = "rgb8") -> list[str]:
    """The synthetic publisher's topics for ``n`` cameras (``/compressed`` for jpeg/png)."""
    suffix = "/compressed" if encoding in ("jpeg", "png") else ""
    return [f"/cam{i}/image_raw{suffix}" for i in range(n)]


def publisher_cmd(cameras: int, width: int, height: int, rate: float,
                  encoding: str = "rgb8", stamp_each: bool = False) -> list[str]:
    return ["-m", "flash_rt_ros.synthetic", "--cameras", str(cameras), "--width", str(width),
            "--height", str(height), "--rate", str(rate), "--encodings", encoding,
            *(["--stamp-each"] if stamp_each else [])]


def node_cmd(params_file: Path, checkpoint: str, topics: list[str], **params) -> list[str]:
    """The policy node on ``params_file`` with the checkpoint, camera topics and overrides."""
    topic_list = "[" + ", ".join(f"'{t}'" for t in topics) + "]"
    overrides = {"checkpoint_dir": checkpoint, "camera_topics": topic_list, **params}
    args = ["-m", "flash_rt_ros.policy_node", "--ros-args", "--params-file", str(params_file)]
    for key, value in overrides.items():
        args += ["-p", f"{key}:={value}"]
    return args


def start(args: list[str], **popen_kwargs) -> subprocess.Popen:
    """``python <args>`` in its own process group, so Ctrl-C reaches only the parent."""
    return subprocess.Popen([sys.executable, *args], start_new_session=True, **popen_kwargs)


def stop(p: subprocess.Popen, timeout: float = 5.0) -> None:
    if p.poll() is not None:
        return
    os.killpg(p.pid, signal.SIGINT)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
