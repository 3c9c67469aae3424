"""A short job (1 to 4 committed batches) whose commit log, or log and lease, an operator removed.

Commits are pipelined, so the plans of such a job may name no commit, and with log and lease gone
the checkpoint can look never committed. Recovery must then either refuse it with a clear message
(`streamkeep checkpoint verify` agreeing), or replay its plans from the start and end exactly as an
uncrashed run: same state, same sink files. On storage without plan logs (a file per plan, as on
S3) a job of 3 batches lost the plan of its first batch to retention, so replaying the remaining
plans from zero silently dropped batch 1 (and every later output differed): every plan now names the
job's first batch (``first_ms``), and an earliest plan later than it is a sign of lost commits.
Real processes: `_job.py` (state, windows, file and rate sources, exactly-once file sinks).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _harness import Workdir, diff_results, expect_ok

pytestmark = pytest.mark.faults

TOTAL = 6


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_short_job_that_lost_its_log_is_refused_or_replayed_exactly(tmp_path: Path) -> None:
    problems: list[str] = []
    for storage, env in (("plan logs", {}), ("plan files", {"JOB_PLAN_FILES": "1"})):
        ref = Workdir.make(tmp_path / f"ref-{storage}", extra_env=env)
        expect_ok(ref.run(TOTAL), "uncrashed run")
        expected = ref.results()
        for k in (1, 2, 3, 4):
            for lost in ("log", "log and lease"):
                case = f"{storage}, {k} batches, {lost} removed"
                w = Workdir.make(tmp_path / case.replace(" ", "_").replace(",", ""), extra_env=env)
                expect_ok(w.run(k), f"{case}: first run")
                shutil.rmtree(Path(w.ckpt, "log"))
                if lost == "log and lease":
                    Path(w.ckpt, "lease").unlink()
                verify = subprocess.run(
                    [sys.executable, "-m", "streamkeep.cli", "checkpoint", "verify", w.ckpt], capture_output=True, text=True, timeout=120
                )
                before = _files(w.out)
                r = w.run(TOTAL)
                if r.returncode != 0:  # refused: with the message, before any output; verify says so too
                    if "holds no commit record, but it once did" not in r.stderr or "new checkpoint URL" not in r.stderr:
                        problems.append(f"{case}: failed without the lost-history message:\n{r.stderr[-1500:]}")
                    if _files(w.out) != before:
                        problems.append(f"{case}: refused, but its sinks wrote")
                    if verify.returncode != 1 or "once held commits" not in verify.stdout:
                        problems.append(f"{case}: refused, but verify said:\n{verify.stdout}")
                    continue
                diff = diff_results(expected, w.results())
                if diff:
                    problems.append(f"{case}: replayed from zero with a different result: " + "; ".join(d[:200] for d in diff[:3]))
                if verify.returncode != 0 or "nothing committed yet (the next start replays its" not in verify.stdout:
                    problems.append(f"{case}: replayed exactly, but verify said:\n{verify.stdout}")
    assert not problems, "\n".join(problems)
