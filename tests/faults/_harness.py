"""Helpers of the fault suite: run `_job.py` in a child process, kill it, compare its output.

Imported by the fault tests (tests/faults) and the S3 recovery test; knows nothing
of pytest fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def scratch_tree(prefix: str) -> Iterator[str]:
    """A `scratch_dir`, removed with everything in it on exit (a test module's shared scratch)."""
    d = scratch_dir(prefix)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


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
        """Per sink, per batch file, its lines in order (not sorted: a restored operator emits its keys in the
        uncrashed run's order, so every file is byte-identical); plus the final state dump."""
        out: dict[str, Any] = {}
        for sink in sorted(p for p in self.out.iterdir() if p.is_dir()):
            files = {f.name: f.read_text().splitlines() for f in sorted(sink.iterdir()) if not f.name.startswith(".")}
            out[sink.name] = files
        out["state.json"] = json.loads((self.out / "state.json").read_text())
        return out


def sorted_lines(results: dict[str, Any]) -> dict[str, Any]:
    """`Workdir.results` with each file's lines sorted: to compare runs on different executors (a key-partitioned
    run emits a batch's keys partition by partition, the local executor in its state's order)."""
    return {k: v if k == "state.json" else {name: sorted(lines) for name, lines in v.items()} for k, v in results.items()}


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


FENCE_JOB = Path(__file__).with_name("_fence_job.py")


class Driver:
    """`_fence_job.py` in a child process, driven line by line (see its docstring)."""

    def __init__(self, ckpt: str, out: Path, tag: str, lease_timeout_s: float, storage_options: dict[str, Any] | None = None) -> None:
        import queue
        import threading

        env = dict(os.environ)
        env.pop(_faults.ENV_VAR, None)
        if storage_options is not None:
            env["JOB_STORAGE_OPTIONS"] = json.dumps(storage_options)
        argv = [sys.executable, str(FENCE_JOB), ckpt, str(out), tag, str(lease_timeout_s)]
        self.tag = tag
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for t in self._pumps:
            t.start()

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout_s: float = 60) -> str:
        """The next stdout line; it must start with `prefix` (else the test fails showing the child's output)."""
        import queue

        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            line = f"<nothing within {timeout_s} s>"
        self.seen.append(line)
        assert line.startswith(prefix), f"driver {self.tag}: expected {prefix!r}, got {line!r}\nstderr:\n" + "\n".join(self.stderr[-40:])
        return line

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def finish(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.resume()
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("stop")
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._pumps:  # EOF once the child is gone
            t.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return rc


def journal(out: Path) -> list[tuple[str, int]]:
    """Every sink write any driver made, in order: (tag, batch time)."""
    path = out / "journal"
    if not path.exists():
        return []
    return [(tag, int(t)) for tag, t in (line.split() for line in path.read_text().splitlines())]


def file_tags(out: Path) -> dict[int, set[str]]:
    """Batch time -> tags of the records in that batch's FileSink file."""
    files = out / "files"
    found: dict[int, set[str]] = {}
    for f in sorted(files.iterdir()) if files.exists() else []:
        if f.name.startswith("batch-"):
            found[int(f.name[6:19])] = {json.loads(line)[0] for line in f.read_text().splitlines()}
    return found


#: Every crash point a random kill sequence may pick: batches, starts and recoveries.
ANY_POINT: list[str] = list(_faults.BATCH_POINTS + _faults.START_POINTS + _faults.RECOVERY_POINTS)


def random_crashes(rng: Any) -> list[str]:
    """Two or three ``point@reach`` kills in a row, drawn from `ANY_POINT` with `rng` (a random.Random)."""
    return [f"{rng.choice(ANY_POINT)}@{rng.randint(1, 8)}" for _ in range(rng.randint(2, 3))]


#: Crash points only a merged snapshot reaches (the path of states of DIRECT_SNAPSHOT_BYTES or more): the
#: small states of the fault jobs are snapshotted in their batch unless a test has them merged (`MERGED_ENV`).
MERGE_ONLY_POINTS = frozenset({"snapshot.mid_compact", "snapshot.before_adopt"})
#: The environment of a fault job whose every snapshot is merged in the background, as a big state's is.
MERGED_ENV = {"JOB_SNAPSHOTS": "merged"}

#: Python code that has every snapshot of the process merged in the background (run before a job's code).
MERGE_ALL = "from streamkeep.scheduler import _state_writer\n_state_writer.DIRECT_SNAPSHOT_BYTES = 0\n"

# Runs a job script with every snapshot merged (see `job_argv`).
_MERGED = MERGE_ALL + """
import os, runpy, sys
sys.argv[:] = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python script` has it
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def job_argv(script: str, *args: str, merged: bool = False) -> list[str]:
    """``python script args``; with `merged`, every snapshot of the job is merged in the background (as a
    big state's is), so the `MERGE_ONLY_POINTS` are reached."""
    return [sys.executable, "-c", _MERGED, script, *args] if merged else [sys.executable, script, *args]


def run_spec_job(script: str, spec: dict[str, Any], root: Path, crash: str | None, *, merged: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a job script that reads its spec (plus ``ckpt``/``out`` under `root`) from ``root/spec.json``, killed at `crash`.

    With `merged`, every snapshot is merged in the background (as a big state's is), so the
    `MERGE_ONLY_POINTS` are reached.
    """
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps({**spec, "ckpt": str(root / "ckpt"), "out": str(root / "out")}))
    env = dict(os.environ)
    env.pop(_faults.ENV_VAR, None)
    if crash is not None:
        env[_faults.ENV_VAR] = crash
    argv = job_argv(script, str(spec_path), merged=merged)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def kill_then_resume(script: str, spec: dict[str, Any], root: Path, crashes: list[str], *, merged: bool = False) -> None:
    """Run the spec job killed at each of `crashes` in turn (each must be a SIGKILL), then to its end.

    With `merged`, every run merges every snapshot in the background (see `job_argv`).
    """
    for crash in crashes:
        r = run_spec_job(script, spec, root, crash, merged=merged)
        assert r.returncode == -signal.SIGKILL, f"{crash}: expected the child to be killed, exit {r.returncode}\n{r.stderr[-3000:]}"
    r = run_spec_job(script, spec, root, None, merged=merged)
    assert r.returncode == 0, f"resume after {crashes}: exit {r.returncode}\n{r.stderr[-3000:]}"
