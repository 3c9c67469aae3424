"""Helpers of the fault suite: run `_job.py` in a child process, kill it, compare its output.

Imported by the fault tests (tests/faults) and the S3 recovery test; knows nothing
of pytest fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamkeep import _faults

JOB = Path(__file__).with_name("_job.py")

# Counts how often each crash point is reached in an uncrashed run, by wrapping _faults.point.
_COUNTING = """
import json, runpy, sys
from collections import Counter
from streamkeep import _faults
hits = Counter()
real = _faults.point
def point(name):
    hits[name] += 1
    real(name)
_faults.point = point
out = sys.argv.pop(1)
sys.argv[0] = {job!r}
try:
    runpy.run_path({job!r}, run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
finally:
    with open(out, "w") as f:
        json.dump(dict(hits), f)
"""


def scratch_dir(prefix: str) -> str:
    """A new directory, on tmpfs when there is one (fsync is free there; SIGKILL semantics are the same)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


@dataclass
class Workdir:
    """One job's checkpoint URL, output and input directories."""

    root: Path
    ckpt: str
    storage_options: dict[str, Any] | None = None
    extra_env: dict[str, str] | None = None

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def inp(self) -> Path:
        return self.root / "in"

    @classmethod
    def make(
        cls, root: str | Path, ckpt: str | None = None, storage_options: dict[str, Any] | None = None, extra_env: dict[str, str] | None = None
    ) -> Workdir:
        root = Path(root)
        (root / "in").mkdir(parents=True, exist_ok=True)
        return cls(root, ckpt if ckpt is not None else str(root / "ckpt"), storage_options, extra_env)

    def argv(self, total: int) -> list[str]:
        return [sys.executable, str(JOB), self.ckpt, str(self.out), str(self.inp), str(total)]

    def env(self, crash: tuple[str, int] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(_faults.ENV_VAR, None)
        if crash is not None:
            env[_faults.ENV_VAR] = f"{crash[0]}@{crash[1]}"
        if self.storage_options is not None:
            env["JOB_STORAGE_OPTIONS"] = json.dumps(self.storage_options)
        env.update(self.extra_env or {})
        return env

    def run(self, total: int, crash: tuple[str, int] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(total), env=self.env(crash), capture_output=True, text=True, timeout=timeout_s)

    def start(self, total: int) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(total), env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def count_points(self, total: int) -> dict[str, int]:
        counts = self.root / "points.json"
        code = _COUNTING.format(job=str(JOB))
        argv = [sys.executable, "-c", code, str(counts), *self.argv(total)[2:]]
        r = subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return dict(json.loads(counts.read_text()))

    def results(self) -> dict[str, Any]:
        """Per sink, per batch file, the sorted lines; plus the final state dump."""
        out: dict[str, Any] = {}
        for sink in sorted(p for p in self.out.iterdir() if p.is_dir()):
            files = {f.name: sorted(f.read_text().splitlines()) for f in sorted(sink.iterdir()) if not f.name.startswith(".")}
            out[sink.name] = files
        out["state.json"] = json.loads((self.out / "state.json").read_text())
        return out


def expect_killed(r: subprocess.CompletedProcess[str], what: str) -> None:
    """The child must have died by SIGKILL at its armed crash point (else the case proves nothing)."""
    assert r.returncode == -signal.SIGKILL, (
        f"{what}: the child was not killed at its crash point (exit status {r.returncode}); the point was "
        f"reached fewer times than armed, or the job failed.\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"
    )


def expect_ok(r: subprocess.CompletedProcess[str], what: str) -> None:
    assert r.returncode == 0, f"{what}: exit status {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}"


def diff_results(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Human-readable differences (empty when equal)."""
    problems = []
    for key in sorted(set(expected) | set(got)):
        e, g = expected.get(key), got.get(key)
        if e == g:
            continue
        if isinstance(e, dict) and isinstance(g, dict) and key != "state.json":
            for name in sorted(set(e) | set(g)):
                if e.get(name) != g.get(name):
                    problems.append(f"{key}/{name}: expected {e.get(name)!r}, got {g.get(name)!r}")
        else:
            problems.append(f"{key}: expected {e!r}, got {g!r}")
    return problems
