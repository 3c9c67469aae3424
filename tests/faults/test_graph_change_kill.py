"""SIGKILL a job right after it wrote a new graph description, before a commit names it: recovery ends exact.

Commit records name the job's graph description by id (``graphs/<id>.graph``, format 8), written
once per driver, before its first commit. A code change (`_job.py` with ``JOB_EXTRA_OPERATOR``: one
more stateful operator) writes a second graph file. The child is killed after that write (crash
point ``graph.after_write``) or just before its first commit record, with the new file on storage
and no commit naming it; the next start must still check the change against the graph the newest
commit names, delete the stray file or take it over, and end with the same output and state as a
run that changed its code without a crash. The next start's sweep then deletes the old graph,
which no kept commit names any more (retention leaves graph files to it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _harness import Workdir, diff_results, expect_killed, expect_ok, scratch_tree

from streamkeep.checkpoint import Checkpoint

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TOTAL = 12
CHANGED = {"JOB_EXTRA_OPERATOR": "1"}


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-graph-kill-") as d:
        yield d


def _graphs(w: Workdir) -> list[str]:
    d = Path(w.ckpt) / "graphs"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _first_six_then_changed(root: str, crash: tuple[str, int] | None) -> tuple[dict[str, Any], list[str]]:
    """Run the job to batch 6 (killed right after committing it), then the changed job (killed at `crash`) to the end."""
    shutil.rmtree(root, ignore_errors=True)
    w = Workdir.make(root)
    expect_killed(w.run(TOTAL, crash=("commit.after_record", 6)), "the old code, killed after committing batch 6")
    (old,) = _graphs(w)
    changed = Workdir.make(root, extra_env=CHANGED)
    if crash is not None:
        expect_killed(changed.run(TOTAL, crash=crash), f"the changed code, killed at {crash[0]}@{crash[1]}")
        newest = Checkpoint(w.ckpt).commits()[0]
        assert newest.batch_time == 6000 and newest.data["graph_id"] == old.removesuffix(".graph")  # nothing of it committed
        assert len(_graphs(w)) == 2, _graphs(w)  # the new graph is on storage, named by no commit
    expect_ok(changed.run(TOTAL), "the changed code, to the end")
    assert old in _graphs(w) and len(_graphs(w)) == 2, _graphs(w)  # retention leaves graph files to the next start
    expect_ok(changed.run(TOTAL), "the changed code, started again (nothing left to run)")
    (new,) = _graphs(w)  # whose sweep deleted the old graph: no kept commit names it
    assert new != old
    assert all(r.data["graph_id"] == new.removesuffix(".graph") for r in Checkpoint(w.ckpt).commits())
    return w.results(), [old, new]


@pytest.fixture(scope="module")
def reference(scratch: str) -> dict[str, Any]:
    results, _ = _first_six_then_changed(os.path.join(scratch, "reference"), None)
    assert "extra" in results and results["extra"], "the changed code wrote no output of its new operator"
    return results


@pytest.mark.parametrize("crash", [("graph.after_write", 1), ("commit.before_record", 1)], ids=lambda c: f"{c[0]}@{c[1]}")
def test_killed_between_writing_a_new_graph_and_its_first_commit(crash: tuple[str, int], reference: dict[str, Any], scratch: str) -> None:
    results, _ = _first_six_then_changed(os.path.join(scratch, crash[0]), crash)
    problems = diff_results(reference, results)
    assert not problems, f"after a crash at {crash[0]}@{crash[1]}:\n" + "\n".join(problems[:20])
