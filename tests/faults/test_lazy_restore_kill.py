"""SIGKILL a job while its restored state is loaded lazily (issue 14): recovery stays exact.

After a restart from a snapshot with a key index, ``map_with_state`` looks its batches' keys
up in the snapshot's columns while the dict is built in the background (from the second
batch). The child (`_lazy_job.py`) runs uncrashed to batch 7 (snapshots written), then is
restarted and killed at each batch crash point in its first or second batch (lazy), restarted
and killed again at the first reach, then resumed to the end: every batch's output and the
final state equal an uncrashed run. The lazy path writes nothing, so it adds no crash point.
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

sys.path.insert(0, str(Path(__file__).parent))
import _lazy_job as job  # noqa: E402
from _harness import run_spec_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.faults]

TOTAL = 14


def _run(root: Path, total: int, crash: str | None) -> subprocess.CompletedProcess[str]:
    return run_spec_job(job.__file__, {"total": total}, root, crash)


def _results(root: Path) -> dict[str, Any]:
    sink = root / "out" / "counts"
    files = {f.name: f.read_text() for f in sorted(sink.iterdir()) if not f.name.startswith(".")}
    return {"batches": files, "state": json.loads((root / "out" / "state.json").read_text())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lazy-ref")
    r = _run(root, TOTAL, None)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _results(root)
    assert len(got["batches"]) == TOTAL
    return got


# A point reached once per batch at most (or only at snapshots): its first reaches are in the lazy batches.
_POINTS = [p for p in _faults.BATCH_POINTS if p not in ("blob.after_write",)]


@pytest.mark.parametrize("point", _POINTS)
def test_kill_while_the_restored_state_loads_lazily_equals_the_uncrashed_run(point: str, reference: dict[str, Any], tmp_path: Path) -> None:
    r = _run(tmp_path, 7, None)
    assert r.returncode == 0, r.stderr[-3000:]
    killed = 0
    for crash in (f"{point}@2", f"{point}@1"):
        r = _run(tmp_path, TOTAL, crash)
        assert r.returncode in (-signal.SIGKILL, 0), f"{crash}: exit {r.returncode}\n{r.stderr[-3000:]}"
        killed += r.returncode == -signal.SIGKILL
    assert killed, f"{point} was never reached after a restart: the case proves nothing"
    r = _run(tmp_path, TOTAL, None)
    assert r.returncode == 0, f"resume: exit {r.returncode}\n{r.stderr[-3000:]}"
    assert list((tmp_path / "out").glob("lazy-*")), "no restore was lazy: the test does not exercise the lazy path"
    got = _results(tmp_path)
    assert got["batches"] == reference["batches"]
    assert got["state"] == reference["state"]
