"""SIGKILL an event-time window job at every crash point: its windows and late records equal an uncrashed run.

The child (`_event_time_job.py`) reads a materialised queue of out-of-order records
(some of them late), sums them per key in event-time windows (tumbling with
``allowed_lateness``, and sessions), routes late records to a FileSink through
``late_records()`` and flushes the last windows with ``idle_timeout``. It is killed
at the n-th reach of each batch crash point (twice in a row for some, so the second
kill hits the recovery and catch-up), then resumed with ``get_or_create`` until done.
Every batch file of both FileSinks must equal the uncrashed run's, and the windows and
late records must equal the brute-force model.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamkeep import _faults

sys.path.insert(0, str(Path(__file__).parent))
import _event_time_job as job  # noqa: E402
from _harness import MERGE_ONLY_POINTS, kill_then_resume, random_crashes, run_spec_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def _spec(window: str) -> dict[str, Any]:
    rng = random.Random(16)
    delay = 1500
    top = 10_000
    batches = []
    for _ in range(10):
        batch = []
        for _ in range(rng.randint(2, 6)):
            if window == "tumbling" and rng.random() < 0.2:
                e = top - delay - rng.randint(0, 40) * 100  # behind the watermark: late when its window was emitted
            else:
                e = top + rng.randint(-delay // 100, 12) * 100
            top = max(top, e)
            batch.append([rng.choice("abc"), e, rng.randint(1, 9)])
        batches.append(batch)
    size = 2000
    return {
        "window": window, "size_ms": size, "slide_ms": size, "batches": batches, "max_delay_ms": delay,
        "lateness_ms": 500 if window == "tumbling" else 0, "idle_ms": 2000, "partitions": 2, "snapshot_every": 3,
        # enough batches after the input for the idle watermark to pass the last window's end
        "total": len(batches) + 2 + (size + delay + 500) // 1000 + 3,
    }


def _run(spec: dict[str, Any], root: Path, crash: str | None, merged: bool = False) -> subprocess.CompletedProcess[str]:
    return run_spec_job(job.__file__, spec, root, crash, merged=merged)


def _finished(spec: dict[str, Any], root: Path, crashes: list[str], merged: bool = False) -> dict[str, dict[int, list[Any]]]:
    """Outputs after being killed at each of `crashes` and resumed; with `merged`, every snapshot is merged
    in the background (the only path that reaches `MERGE_ONLY_POINTS`), in every run."""
    kill_then_resume(job.__file__, spec, root, crashes, merged=merged)
    return job.read_file_sinks(str(root / "out"))


@pytest.fixture(scope="module", params=["tumbling", "session"])
def baseline(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, dict[int, list[Any]]]]:
    spec = _spec(request.param)
    got = _finished(spec, tmp_path_factory.mktemp(f"et-base-{request.param}"), [])
    windows = sorted(r for rs in got["windows"].values() for r in rs)
    late = sorted(r for rs in got["late"].values() for r in rs)
    want_windows, want_late = job.model(spec, flushed=True)
    assert windows == want_windows, f"uncrashed run {windows} != model {want_windows}"
    assert late == sorted(want_late)
    if request.param == "tumbling":
        assert late, "the tumbling input has late records (the test must exercise their routing)"
    return spec, got


# Points every run reaches more than twice (snapshot.mid_write: every 3rd batch; retention: once commits pile up).
_POINTS = [p for p in _faults.BATCH_POINTS if p not in ("blob.after_write",)] + ["blob.after_write"]


@pytest.mark.parametrize("point", _POINTS)
def test_kill_at_each_crash_point_equals_the_uncrashed_run(
    point: str, baseline: tuple[dict[str, Any], dict[str, dict[int, list[Any]]]], tmp_path: Path
) -> None:
    spec, want = baseline
    crashes = [f"{point}@3"] + ([f"{point}@1"] if point in ("state.after_write", "sink.before_write", "commit.before_record") else [])
    got = _finished(spec, tmp_path, crashes, merged=point in MERGE_ONLY_POINTS)
    for name in job.OUTPUTS:
        assert got[name] == want[name], f"{name} after kills {crashes}: {got[name]} != {want[name]}"


@pytest.mark.parametrize("seed", range(6))
def test_random_kill_sequences_equal_the_uncrashed_run(
    seed: int, baseline: tuple[dict[str, Any], dict[str, dict[int, list[Any]]]], tmp_path: Path
) -> None:
    """Two or three kills in a row at random points and reaches (starts and recoveries included)."""
    spec, want = baseline
    rng = random.Random(seed)
    crashes = random_crashes(rng)
    for crash in crashes:
        r = _run(spec, tmp_path, crash)
        # killed there, or finished because the point is reached fewer times in what was left to run
        assert r.returncode in (0, -signal.SIGKILL), f"{crash}: exit {r.returncode}\n{r.stderr[-3000:]}"
    r = _run(spec, tmp_path, None)
    assert r.returncode == 0, f"resume after {crashes}: exit {r.returncode}\n{r.stderr[-3000:]}"
    got = job.read_file_sinks(str(tmp_path / "out"))
    for name in job.OUTPUTS:
        assert got[name] == want[name], f"{name} after kills {crashes}: {got[name]} != {want[name]}"
