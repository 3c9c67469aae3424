"""The README's "short tour" works as pasted: run it, feed it files, kill it, resume it."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _tour() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A short tour", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block in the README's tour"
    return m.group(1)


def _feed(inp: Path, name: str, text: str) -> None:
    """As the README says: write under a dot name, then rename into place."""
    (inp / ".new").write_text(text)
    os.replace(inp / ".new", inp / name)


def _wait_for(proc: subprocess.Popen[str], wanted: list[str], out: list[str], deadline_s: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + deadline_s
    while not all(w in "".join(out) for w in wanted):
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"waited for {wanted}; output so far:\n{''.join(out)}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            out.append(proc.stdout.readline())


def test_the_readme_tour_runs_as_pasted_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "tour.py").write_text(_tour())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "tour.py"]
    out: list[str] = []
    with subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            _wait_for(proc, ["Time:"], out)  # running: the first batch was printed
            _feed(tmp_path / "incoming", "words-1.txt", "to be or not to be\n")
            _wait_for(proc, ["('to', 2)", "('be', 2)"], out)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    _feed(tmp_path / "incoming", "words-2.txt", "be quick\n")  # arrives while the job is down
    out = []
    with subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            _wait_for(proc, ["('be', 3)", "('quick', 1)", "('to', 2)"], out)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
