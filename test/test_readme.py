"""The README's commands work as written, in a new shell (nothing sourced or activated)."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = "bash scripts/setup.sh && source scripts/ros_env.sh && "


def _python_commands(text: str) -> list[str]:
    """Every line or inline code span of the README that runs Python."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", prose) + [ln for b in blocks for ln in b.splitlines()]
    return [s.strip() for s in spans if re.search(r"\bpython3? -m\b", s)]


def test_every_python_command_runs_in_a_new_shell():
    """Only the two set-up commands activate the environment; every other command names
    the venv's interpreter (a bare `python -m flash_rt.tools.demo` fails in a new shell)."""
    text = (REPO / "README.md").read_text()
    setup_lines = [c for c in _python_commands(text) if c.startswith(SETUP)]
    assert len(setup_lines) == 2, setup_lines  # the main job and the tests
    for cmd in _python_commands(text):
        if cmd.startswith(SETUP):
            continue
        assert cmd.startswith(".venv/bin/python"), f"README: {cmd!r} needs an activated venv"


def test_engine_demo_runs_as_the_readme_says():
    venv_python = REPO / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH")}
    out = subprocess.run([python, "-m", "flash_rt.tools.demo", "--iters", "1"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "action chunk" in out.stdout and "latency ms" in out.stdout, out.stdout
