"""SIGKILL a clean stop while it commits the snapshot merge it waited for (issue 14 follow-up): recovery is exact.

A job stopped every few batches (`_stop_job.py`, three batches a run, ``snapshot_every=3``, every
snapshot merged in the background) has a merge in flight at each stop. The stop waits for it and
writes one more commit record of its last batch that names the merged snapshot. The first run is
killed before that record (the snapshot file is named by nothing), while it is written, after it,
and while retention deletes what only the replaced chain needed; then the job is resumed run by
run to the end. Every batch's output and the final state equal the same runs uncrashed (which equal
one uninterrupted run of all the batches), and once
the next start has swept, every state file left is named by a kept commit record.

The same runs without ``stop()`` (a script that just exits after ``run()``) are stopped by the
context's at-exit hook, which waits for the merge and names it as ``stop()`` does: uncrashed they
equal the stopped runs, and killed at the same points while the hook commits, they restore exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamkeep import _faults
from streamkeep.checkpoint import Checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import _stop_job as job  # noqa: E402
from _harness import run_spec_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TOTAL = 9
STEP = 3
SNAP = "state/counts/000000000003000.snap"  # merged from batch 3 on, in the first run's last batch


def _run(root: Path, crash: str | None, *, stop: bool = True) -> subprocess.CompletedProcess[str]:
    return run_spec_job(job.__file__, {"total": TOTAL, "step": STEP, "stop": stop}, root, crash, merged=True)


def _runs_to_the_end(root: Path, *, stop: bool = True) -> None:
    for _ in range(TOTAL // STEP + 1):  # the last run starts (sweeps) and stops: nothing left to run
        r = _run(root, None, stop=stop)
        assert r.returncode == 0, r.stderr[-3000:]


def _results(root: Path) -> dict[str, Any]:
    sink = root / "out" / "counts"
    files = {f.name: f.read_text() for f in sorted(sink.iterdir()) if not f.name.startswith(".")}
    return {"batches": files, "state": json.loads((root / "out" / "state.json").read_text())}


def _newest(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = Checkpoint(str(root / "ckpt")).commits()[0].data
    return data


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("stop-ref")
    r = _run(root, None)
    assert r.returncode == 0, r.stderr[-3000:]
    newest = _newest(root)
    assert (newest["batch_time"], newest["state"]["counts"]["snapshot"]) == (3000, SNAP), "the stop did not commit the merge it waited for"
    _runs_to_the_end(root)
    got = _results(root)
    assert len(got["batches"]) == TOTAL
    # The runs of three batches with their stops' records equal one uninterrupted run of all the batches.
    single = tmp_path_factory.mktemp("stop-single")
    r = run_spec_job(job.__file__, {"total": TOTAL, "step": TOTAL, "snapshot_every": STEP}, single, None, merged=True)
    assert r.returncode == 0, r.stderr[-3000:]
    whole = _results(single)
    assert got["batches"] == whole["batches"], "the runs of three batches wrote other outputs than one run of all"
    assert got["state"] == whole["state"], "the runs of three batches ended with another state than one run of all"
    return got


def test_runs_that_exit_without_stop_commit_the_merge_at_exit_and_equal_the_stopped_runs(reference: dict[str, Any], tmp_path: Path) -> None:
    r = _run(tmp_path, None, stop=False)
    assert r.returncode == 0, r.stderr[-3000:]
    newest = _newest(tmp_path)
    assert (newest["batch_time"], newest["state"]["counts"]["snapshot"]) == (3000, SNAP), "the exit did not commit the merge in flight"
    _runs_to_the_end(tmp_path, stop=False)
    assert _results(tmp_path) == reference


# (point, reach, is the merged snapshot named by the newest record when killed). The first run commits
# batches 1-3 (three records), then the stop's record is the fourth; retention first deletes at the third.
_CASES = [
    ("stop.before_snapshot_commit", 1, False),
    ("commit.before_record", 4, False),
    ("commit.after_record", 4, True),
    ("stop.after_snapshot_commit", 1, True),
    ("retention.mid_delete", 2, True),
]


def test_every_stop_point_is_a_case() -> None:
    assert set(_faults.STOP_POINTS) <= {p for p, _, _ in _CASES}


@pytest.mark.parametrize("stop", [True, False], ids=["stop", "exit-without-stop"])
@pytest.mark.parametrize(("point", "nth", "named"), _CASES)
def test_kill_while_a_stop_commits_its_merged_snapshot_equals_the_uncrashed_runs(
    point: str, nth: int, named: bool, stop: bool, reference: dict[str, Any], tmp_path: Path
) -> None:
    r = _run(tmp_path, f"{point}@{nth}", stop=stop)
    assert r.returncode == -signal.SIGKILL, f"{point}@{nth}: not killed (exit {r.returncode})\n{r.stderr[-3000:]}"
    newest = _newest(tmp_path)
    assert newest["batch_time"] == 3000
    assert (newest["state"]["counts"]["snapshot"] == SNAP) is named, f"{point}@{nth} was not reached in the stop's commit"
    assert (tmp_path / "ckpt" / SNAP).exists()
    _runs_to_the_end(tmp_path, stop=stop)
    got = _results(tmp_path)
    assert got["batches"] == reference["batches"]
    assert got["state"] == reference["state"]
    ckpt = Checkpoint(str(tmp_path / "ckpt"))
    kept = set().union(*(rec.files() for rec in ckpt.commits()))
    on_disk = {str(p.relative_to(tmp_path / "ckpt")) for p in (tmp_path / "ckpt" / "state").rglob("*") if p.is_file()}
    assert on_disk <= kept, f"state files named by no commit record after the sweep: {sorted(on_disk - kept)}"
