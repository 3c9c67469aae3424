"""The examples and the demo run as users run them (real processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STREAMKEEP = [sys.executable, "-m", "streamkeep.cli"]


def test_wordcount_example_resumes_after_restart(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, str(ROOT / "examples" / "wordcount.py"), "--input", str(inp), "--checkpoint", str(ckpt), "--max-batches", "1"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)  # first run: existing files are not "new"
    (inp / "a.txt").write_text("to be or not to be\n")
    out1 = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "('to', 2)" in out1 and "('be', 2)" in out1
    (inp / "b.txt").write_text("to do\n")
    out2 = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "('to', 3)" in out2 and "('be', 2)" in out2 and "('do', 1)" in out2


def _totals(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"words so far:\s+(\d+)", text)]


@pytest.mark.slow
def test_demo_kill_and_resume(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [*STREAMKEEP, "demo", "--seconds", "30", "--interval", "0.2", "--checkpoint", str(tmp_path / "ck")]
    seen = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        try:
            deadline = time.monotonic() + 30
            first = proc.stdout.readline()
            for line in proc.stdout:
                seen += _totals(line)
                if len(seen) >= 4 or time.monotonic() > deadline:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    assert re.match(r"fresh start at \d\d:\d\d:\d\d\.\d{3}; ", first), first
    assert f"run `streamkeep demo --checkpoint {tmp_path / 'ck'}` to resume" in first, first  # the command that resumes it
    assert len(seen) >= 4, seen
    out = subprocess.run([*cmd[:-4], "--seconds", "1.5", "--interval", "0.2", "--checkpoint", str(tmp_path / "ck")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60).stdout
    assert re.search(r"resumed from checkpoint .*: the last committed batch is of \d\d:\d\d:\d\d\.\d{3}", out), out
    assert re.search(r"^stopped; the last committed batch is of \d\d:\d\d:\d\d\.\d{3}\. Run `streamkeep demo --checkpoint ", out, re.M), out
    after = _totals(out)
    assert after and after[0] > seen[-1] - 200 and after == sorted(after)  # counts continue, never restart from 0
    assert after[0] >= seen[0]


@pytest.mark.slow
def test_demo_interrupted_with_ctrl_c_says_stopped_once_and_resumes(tmp_path: Path) -> None:
    """Ctrl-C printed two "stopped; ..." lines (the engine's, naming get_or_create, and the demo's own)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ck = str(tmp_path / "ck")
    cmd = [*STREAMKEEP, "demo", "--seconds", "60", "--interval", "0.2", "--checkpoint", ck]
    seen: list[int] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            seen += _totals(line)
            if len(seen) >= 3 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, rest
    assert len(seen) >= 3, seen
    assert "interrupted: stopping after the batch in progress" in rest, rest
    assert len(re.findall(r"^stopped", rest, re.M)) == 1, rest
    assert f"Run `streamkeep demo --checkpoint {ck}` again to continue the counts." in rest, rest
    out = subprocess.run([*cmd[:-6], "--seconds", "1", "--interval", "0.2", "--checkpoint", ck],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60).stdout
    assert "resumed from checkpoint" in out, out
    after = _totals(out)
    assert after and after[0] > seen[-1], (seen, after)
