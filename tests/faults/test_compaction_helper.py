"""SIGKILL the driver while a helper process merges a snapshot (issue 14): recovery is exact.

The fault job (`_job.py`) with ``JOB_COMPACT_HELPER`` merges every snapshot in a helper process
(``python -m streamkeep.checkpoint._compact``), the path big states on local disks take. The crash
matrix (test_crash_points.py) covers the same steps with the in-process merge; that a helper dies
with its driver is tested in tests/unit/checkpoint/test_checkpoint_compaction.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import Workdir, diff_results, expect_killed, expect_ok, scratch_tree

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TOTAL = 12


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-helper-") as d:
        yield d


@pytest.fixture(scope="module")
def reference(scratch: str) -> dict[str, Any]:
    """The uncrashed job with the in-process merge."""
    w = Workdir.make(os.path.join(scratch, "reference"))
    expect_ok(w.run(TOTAL), "reference")
    return w.results()


@pytest.mark.parametrize(("point", "nth"), [("state.after_write", 4), ("snapshot.before_adopt", 2), ("commit.after_record", 7), ("state.after_write", 10)])
def test_kill_while_a_helper_merges_then_recover_equals_uncrashed(point: str, nth: int, reference: dict[str, Any], scratch: str) -> None:
    root = os.path.join(scratch, f"{point}@{nth}")
    w = Workdir.make(root, extra_env={"JOB_COMPACT_HELPER": "1"})
    expect_killed(w.run(TOTAL, crash=(point, nth)), f"crash at {point}@{nth}")
    expect_ok(w.run(TOTAL), f"recovery after {point}@{nth}")
    problems = diff_results(reference, w.results())
    assert not problems, f"after a crash at {point}@{nth} (helper merges):\n" + "\n".join(problems[:20])
    snaps = list(Path(w.ckpt, "state").rglob("*.snap"))
    assert snaps, "no snapshot was written: the helper path was not exercised"
    shutil.rmtree(root, ignore_errors=True)
