"""Helpers for the PySpark facade tests: job runners, subprocesses, waiting (no fixtures here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from streamkeep.compat.pyspark import StreamingContext

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SEEDS = os.path.join(HERE, "seed_programs")


def run_batches(ssc: StreamingContext, n: int) -> None:
    """Run `n` batches back to back (no waiting for the clock), then stop."""
    try:
        ssc._ssc.run(max_batches=n)
    finally:
        ssc.stop(stopSparkContext=False)


def streamkeep_cmd(app: str, *args: str) -> list[str]:
    """The command line that runs `app` with ``streamkeep run --pyspark``."""
    return [sys.executable, "-c", "import sys; from streamkeep.cli import main; sys.exit(main(sys.argv[1:]))", "run", "--pyspark", app, *args]


def spawn(app: str, *args: str, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE, cwd: str | None = None) -> subprocess.Popen[str]:
    """Start `app` under ``streamkeep run --pyspark`` (text output, piped unless files are given)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (REPO, os.environ.get("PYTHONPATH")) if x), PYTHONUNBUFFERED="1")
    return subprocess.Popen(streamkeep_cmd(app, *args), stdout=stdout, stderr=stderr, text=True, env=env, cwd=cwd)


class LineReader:
    """Collects a child's output lines in a thread, so tests can wait for a line without blocking."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pred: Any, timeout_s: float, what: str) -> None:
        """Wait until `pred(lines)` is true, or fail after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred(self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out after {timeout_s} s waiting for {what}; output so far:\n" + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.1))


def wait_for(pred: Any, timeout_s: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    """Poll `pred()` until true (deadline-bounded); fail early if `proc` died."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the job exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
