"""SIGKILL while a batch's commit is still being written and the next batch's sinks already wrote.

The batch loop hands a batch's delta files and commit record to a background committer
and goes on with the next batch; its plan is durable before its outputs run. So a crash
can leave a batch whose sinks wrote (batch T+1) after a batch whose commit never reached
the disk (batch T). Recovery must replay both from their plans and end exactly where an
uncrashed run ends.

Armed, the crash point ``commit.overtaken`` holds each commit back until the next batch's
outputs ran, then the child is killed right after those outputs: every case below lands
in that window, and each checks that it did (outputs on disk for a batch at least two
after the newest commit on disk) before recovering and comparing with the uncrashed
job (`_job.py`: every operator kind, inline deltas or delta files).
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
POINT = "commit.overtaken"
MODES = {"inline": {}, "files": {"JOB_INLINE_DELTA_BYTES": "0"}}


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_tree("streamkeep-pipeline-") as d:
        yield d


@pytest.fixture(scope="module")
def references(scratch: str) -> dict[str, dict[str, Any]]:
    out = {}
    for mode, env in MODES.items():
        w = Workdir.make(os.path.join(scratch, f"reference-{mode}"), extra_env=env)
        expect_ok(w.run(TOTAL), f"uncrashed run ({mode})")
        out[mode] = w.results()
    return out


def _newest_output_ms(w: Workdir) -> int:
    """Batch time of the newest batch the "totals" FileSink wrote (it writes a file every batch)."""
    names = [p.name for p in (w.out / "totals").iterdir() if p.name.startswith("batch-")]
    return max(int(n.split("-")[1].split(".")[0]) for n in names)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nth", [1, 2, 5, 9])
def test_kill_with_a_commit_in_flight_recovers_exactly(nth: int, mode: str, references: dict[str, dict[str, Any]], scratch: str) -> None:
    w = Workdir.make(os.path.join(scratch, f"{mode}-{nth}"), extra_env=MODES[mode])
    expect_killed(w.run(TOTAL, crash=(POINT, nth)), f"crash at {POINT}@{nth}")
    commits = Checkpoint(w.ckpt).commits()
    newest_commit = commits[0].batch_time if commits else 0
    wrote = _newest_output_ms(w)
    assert wrote >= newest_commit + 2000, (
        f"the crash did not land with a commit in flight: outputs up to batch {wrote} ms, newest commit {newest_commit} ms"
    )
    expect_ok(w.run(TOTAL), f"recovery after {POINT}@{nth}")
    problems = diff_results(references[mode], w.results())
    assert not problems, f"after a crash at {POINT}@{nth}:\n" + "\n".join(problems[:20])
    shutil.rmtree(w.root, ignore_errors=True)


def test_kill_twice_with_commits_in_flight(references: dict[str, dict[str, Any]], scratch: str) -> None:
    """Killed in the window, then killed in it again while replaying, then recovered."""
    w = Workdir.make(os.path.join(scratch, "twice"))
    expect_killed(w.run(TOTAL, crash=(POINT, 4)), f"first crash at {POINT}@4")
    expect_killed(w.run(TOTAL, crash=(POINT, 2)), f"second crash at {POINT}@2")
    expect_ok(w.run(TOTAL), "recovery after two crashes")
    problems = diff_results(references["inline"], w.results())
    assert not problems, "after two crashes:\n" + "\n".join(problems[:20])
    assert Path(w.ckpt).is_dir()
    shutil.rmtree(w.root, ignore_errors=True)
