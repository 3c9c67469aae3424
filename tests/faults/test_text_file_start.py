"""SIGKILL a text_file_stream job before its first plan: files that arrived meanwhile are read once.

With ``new_files_only`` (the default) a fresh job skips the files present when it
starts. That list must be durable before the first plan: a driver killed in
between and restarted must skip the same files, not the ones that arrived while
it was down (they would be lost).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _harness import expect_killed, expect_ok

from streamkeep import _faults

pytestmark = [pytest.mark.faults, pytest.mark.slow]

JOB = Path(__file__).with_name("_textfile_job.py")


def _put(d: Path, name: str, text: str) -> None:
    tmp = d / f".tmp-{name}"
    tmp.write_text(text)
    os.replace(tmp, d / name)


def _argv(root: Path, mode: str) -> list[str]:
    return [sys.executable, str(JOB), str(root / "ckpt"), str(root / "in"), str(root / "out"), mode]


def _run(root: Path, crash: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run two batches (killed at `crash`, ``"<point>@<n>"``, if given)."""
    full = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR} | env | ({_faults.ENV_VAR: crash} if crash else {})
    return subprocess.run(_argv(root, "run"), capture_output=True, text=True, timeout=120, env=full)


def _start_and_kill_after(root: Path, arrive: str) -> None:
    """Start the job, wait until it has opened its source, drop file `arrive` in, SIGKILL it."""
    with subprocess.Popen(_argv(root, "wait"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            line = ""
            while not line.startswith("READY"):
                left = deadline - time.monotonic()
                assert left > 0 and proc.poll() is None, f"the job did not get ready: {proc.stderr.read() if proc.stderr else ''}"
                ready, _, _ = select.select([proc.stdout], [], [], left)
                if ready:
                    line = proc.stdout.readline()
            _put(root / "in", arrive, f"{arrive.split('.')[0]}\n")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_files_arriving_before_the_first_plan_survive_sigkills(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    _put(tmp_path / "in", "old.txt", "old\n")  # there before the first start: skipped (new_files_only)
    _start_and_kill_after(tmp_path, "one.txt")
    _start_and_kill_after(tmp_path, "two.txt")  # a second start before any plan decides the same
    r = subprocess.run(_argv(tmp_path, "run"), capture_output=True, text=True, timeout=120)
    expect_ok(r, "the restarted job")
    out = tmp_path / "out"
    lines = sorted(ln for f in out.iterdir() if not f.name.startswith(".") for ln in f.read_text().splitlines())
    assert lines == ["one", "two"]


@pytest.mark.parametrize("layout", ["plan log", "plan files"])
def test_a_batch_killed_twice_is_replayed_with_its_plan_not_with_files_that_arrived_since(tmp_path: Path, layout: str) -> None:
    """Killed once batch 1's plan is durable, then again while replaying it: the second restart still replays batch 1's
    plan (only ``one.txt``). The first restart's sweep must leave that plan (on S3 and other fsspec storages a
    file of its own): a batch planned again would take ``two.txt`` too, which arrived since."""
    env = {"JOB_PLAN_FILES": "1" if layout == "plan files" else "0"}
    (tmp_path / "in").mkdir()
    _start_and_kill_after(tmp_path, "one.txt")  # arrives once the job has opened its source: batch 1 reads it
    expect_killed(_run(tmp_path, "plan.after_write@1", **env), "killed once batch 1's plan was durable")
    expect_killed(_run(tmp_path, "run.after_read@1", **env), "killed again, replaying batch 1")
    _put(tmp_path / "in", "two.txt", "two\n")
    expect_ok(_run(tmp_path, **env), "the restarted job")
    out = {f.name: f.read_text().splitlines() for f in (tmp_path / "out").iterdir() if not f.name.startswith(".")}
    assert out == {"batch-0000000001000.txt": ["one"], "batch-0000000002000.txt": ["two"]}, out
