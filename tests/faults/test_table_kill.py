"""SIGKILL a table job (issue 15) at every crash point: its outputs equal an uncrashed run and the model.

The child (`_table_job.py`) reads a materialised queue of Arrow tables, keeps two
``aggregate_state`` operators (Arrow IPC deltas and snapshots) a window of tables and an ``aggregate_window`` (running table, vectorised inverse),
and writes JSON lines and Parquet files. It is killed at the n-th reach of each batch
crash point (twice for some: the second kill hits recovery and catch-up), then resumed
with ``get_or_create`` until done. Every output file of every batch must equal the
uncrashed run's, and the running aggregate must equal the pure-Python model.
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
import _table_job as job  # noqa: E402
from _harness import MERGE_ONLY_POINTS, kill_then_resume, random_crashes, run_spec_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def _spec() -> dict[str, Any]:
    rng = random.Random(15)
    batches = [[[rng.choice("abcdefg"), rng.randint(0, 2), rng.randint(0, 9)] for _ in range(rng.randint(2, 8))] for _ in range(9)]
    # table_threads: aggregate_state's probes are split over 3 threads even for these small batches
    return {"batches": batches, "total": len(batches) + 2, "snapshot_every": 3, "table_threads": 3}


def _run(spec: dict[str, Any], root: Path, crash: str | None, merged: bool = False) -> subprocess.CompletedProcess[str]:
    return run_spec_job(job.__file__, spec, root, crash, merged=merged)


def _finished(spec: dict[str, Any], root: Path, crashes: list[str], merged: bool = False) -> dict[str, dict[int, list[Any]]]:
    """Outputs after being killed at each of `crashes` and resumed; with `merged`, every snapshot is merged
    in the background (the only path that reaches `MERGE_ONLY_POINTS`), in every run."""
    kill_then_resume(job.__file__, spec, root, crashes, merged=merged)
    return job.read_outputs(str(root / "out"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, dict[int, list[Any]]]]:
    spec = _spec()
    root = tmp_path_factory.mktemp("tables-base")
    got = _finished(spec, root, [])
    want = job.model_changed(spec)
    assert {t: rows for t, rows in got["changed"].items() if rows} == want, "the uncrashed run differs from the model"
    assert len(got["all"]) == spec["total"] and len(got["win"]) == spec["total"]
    assert len(got["awin"]) == spec["total"] // 2 and any(got["awin"].values())
    split = (root / "out" / "split-probes").read_text().split()
    assert split and set(split) <= {"2", "3"}, "the job's probes were not split over threads"
    return spec, got


_POINTS = list(_faults.BATCH_POINTS)


@pytest.mark.parametrize("point", _POINTS)
def test_kill_at_each_crash_point_equals_the_uncrashed_run(
    point: str, baseline: tuple[dict[str, Any], dict[str, dict[int, list[Any]]]], tmp_path: Path
) -> None:
    spec, want = baseline
    # mid-compaction is reached only by the mergeable operators' snapshots (the window's slices; the
    # table states' snapshots are their table written as Arrow IPC, no merge): fewer reaches than the others
    reach = 1 if point == "snapshot.mid_compact" else 5
    crashes = [f"{point}@{reach}"] + ([f"{point}@1"] if point in ("state.after_write", "sink.before_write", "commit.before_record") else [])
    got = _finished(spec, tmp_path, crashes, merged=point in MERGE_ONLY_POINTS)
    for name in job.OUTPUTS:
        assert got[name] == want[name], f"{name} after kills {crashes}: {got[name]} != {want[name]}"


@pytest.mark.parametrize("seed", range(3))
def test_random_kill_sequences_equal_the_uncrashed_run(
    seed: int, baseline: tuple[dict[str, Any], dict[str, dict[int, list[Any]]]], tmp_path: Path
) -> None:
    """Two or three kills in a row at random points and reaches (starts and recoveries included)."""
    spec, want = baseline
    rng = random.Random(seed)
    crashes = random_crashes(rng)
    for crash in crashes:
        r = _run(spec, tmp_path, crash)
        assert r.returncode in (0, -signal.SIGKILL), f"{crash}: exit {r.returncode}\n{r.stderr[-3000:]}"
    r = _run(spec, tmp_path, None)
    assert r.returncode == 0, f"resume after {crashes}: exit {r.returncode}\n{r.stderr[-3000:]}"
    got = job.read_outputs(str(tmp_path / "out"))
    for name in job.OUTPUTS:
        assert got[name] == want[name], f"{name} after kills {crashes}: {got[name]} != {want[name]}"
