"""A script that calls ``run()`` and exits without ``stop()`` is stopped at exit, as ``stop()`` would.

A backfill from cron (`_exit_job.py`: ``run(max_batches=2)`` over a mid-size state, then the script
ends) used to lose the snapshot merge in flight at every exit, so the chain a restart reads grew by
two batches per run, towards MAX_CHAIN (500). The context's at-exit hook now waits for the merge and
names it in one more commit record: the chain stays bounded and the state equals one uninterrupted
run. A merge that hangs is waited for a bounded time, then dropped (the restart reads the longer
chain, exactly). The stop runs before streamkeep's exit-status hook ends a process whose started job
failed unawaited. A child forked by such a script exits without stopping (or logging about) its parent's job.
Under `streamkeep run` the stop comes when the script ends, while the run's log is still shown.
Killing the process while the hook commits is covered by test_stop_snapshot.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import streamkeep as sk
from streamkeep import _faults
from streamkeep.checkpoint import Checkpoint
from streamkeep.testing import state_of

sys.path.insert(0, str(Path(__file__).parent))
import _exit_job as job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.faults]

STOPPING = "exiting without ssc.stop() after run(): stopping the job"
SNAP = "state/state/000000000003000.snap"  # merged from batch 3 on, in a second run's first batch


def _run(url: str, *args: str, status: int = 0, cli: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}
    argv = [sys.executable, *(["-m", "streamkeep.cli", "run", "--no-ui"] if cli else []), job.__file__, url, *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == status, r.stderr[-3000:]
    return r


def _newest_snapshot(url: str) -> tuple[int, str | None]:
    newest = Checkpoint(url).commits()[0].data
    return newest["batch_time"], newest["state"]["state"].get("snapshot")


def _chain(url: str) -> tuple[int, int]:
    """(batch time, deltas a restart reads after the snapshot) of the newest commit record."""
    newest = Checkpoint(url).commits()[0].data
    return newest["batch_time"], len(newest["state"]["state"]["deltas"])


def _reference(url: str, batches: int) -> dict[str, int]:
    ref = job.build(url, seed=True)
    ref.run(max_batches=batches)
    out = dict(state_of(ref, "state")["set"])
    ref.stop()
    return out


def test_runs_exiting_without_stop_keep_their_restart_chain_short_and_exact(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    runs = 6
    chains = []
    for i in range(runs):
        r = _run(url)
        assert STOPPING in r.stderr, r.stderr[-3000:]
        chains.append(_chain(url))
    assert [t for t, _ in chains] == [2000 * (i + 1) for i in range(runs)]
    assert max(n for _, n in chains) <= 3, f"the restart chain grew with the runs (snapshot_every=3): {chains}"
    again = sk.StreamingContext.get_or_create(url, lambda: job.build(url, seed=False))
    got = dict(state_of(again, "state")["set"])
    again.stop()
    assert got == _reference(str(tmp_path / "ref"), 2 * runs)


def test_a_forked_child_exiting_leaves_its_parents_job_alone(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    _run(url)
    r = _run(url, "--fork")  # batch 3 starts a merge: in flight while the child exits
    m = re.search(r"^CHILD (\d+)$", r.stdout, re.M)
    assert m is not None, r.stdout
    child = m[1]
    assert not [line for line in r.stderr.splitlines() if line.startswith(f"{child} ")], f"the forked child logged:\n{r.stderr}"
    assert [line for line in r.stderr.splitlines() if STOPPING in line and not line.startswith(f"{child} ")], r.stderr
    assert _newest_snapshot(url) == (4000, SNAP), "the parent's exit did not commit the merge in flight"


def test_the_stop_at_exit_runs_before_the_exit_status_hook_of_a_failed_unawaited_job(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    _run(url)
    r = _run(url, "--failed-start", status=1)  # batch 3 starts a merge; the second job fails, never awaited
    assert "exiting with status 1" in r.stderr and STOPPING in r.stderr, r.stderr[-3000:]
    assert _newest_snapshot(url) == (4000, SNAP), "the exit did not commit the merge in flight before exiting 1"


def test_a_merge_that_hangs_at_exit_is_dropped_after_the_bound_and_the_restart_is_exact(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    _run(url)
    r = _run(url, "--hold-merge")  # batch 3 starts a merge that never ends
    assert STOPPING in r.stderr and "did not finish within 0.5 s: the stop drops it" in r.stderr, r.stderr[-3000:]
    assert _newest_snapshot(url) == (4000, None), "a merge that never ended was named"
    _run(url)  # the lease ended with the process: the next run claims the checkpoint at once
    again = sk.StreamingContext.get_or_create(url, lambda: job.build(url, seed=False))
    got = dict(state_of(again, "state")["set"])
    again.stop()
    assert got == _reference(str(tmp_path / "ref"), 6)


def test_streamkeep_run_stops_a_run_job_the_script_left_when_the_script_ends_and_says_so(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    _run(url, "--cli-logging", cli=True)
    r = _run(url, "--cli-logging", cli=True)  # batch 3 starts a merge, in flight when the script ends
    assert STOPPING in r.stderr, f"the stop was not said (streamkeep run's log is shown until the script's end):\n{r.stderr[-3000:]}"
    assert _newest_snapshot(url) == (4000, SNAP), "the merge in flight was not committed"


def test_the_exit_bound_holds_when_run_is_going_in_another_thread(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    _run(url)
    # run() in a daemon thread, a merge that hangs from batch 3 on: before the fix the run() thread's own stop
    # waited for the merge without a bound, holding the lock the exit's stop then waited for: the process hung.
    r = _run(url, "--hold-merge", "--thread")
    bounded = "did not finish within 0.5 s: the stop drops it" in r.stderr or "did not end within the 0.5 s the exit waits for its jobs" in r.stderr
    assert STOPPING in r.stderr and bounded, r.stderr[-3000:]
    again = sk.StreamingContext.get_or_create(url, lambda: job.build(url, seed=False))
    done = again.last_batch_time_ms
    got = dict(state_of(again, "state")["set"])
    again.stop()
    assert done is not None and done >= 4000
    assert got == _reference(str(tmp_path / "ref"), done // 1000)


@pytest.mark.parametrize("cli", [False, True], ids=["exit", "streamkeep-run"])
def test_one_bound_holds_for_the_whole_exit_when_several_jobs_were_left_running(tmp_path: Path, cli: bool) -> None:
    # Three contexts ran run() and were never stopped, each with a merge that hangs. Each one's at-exit stop (or
    # streamkeep run's stop when the script ends) used to take a deadline of its own: the exit waited 3 x
    # EXIT_MERGE_WAIT_S. The merge waits given out now add up to one.
    url = str(tmp_path / "ck")
    _run(url)
    r = _run(url, "--hold-merge", "--contexts", "3", *(["--cli-logging"] if cli else []), cli=cli)
    waits = [float(w) for w in re.findall(r"^EXIT-WAIT (\S+)$", r.stdout, re.M)]
    assert len(waits) == 3 and r.stderr.count(STOPPING) == 3, (r.stdout, r.stderr[-3000:])
    assert sum(waits) <= 0.5, f"each job's stop at exit waited up to the whole bound (0.5 s): {waits}"
    for u in (url, url + "-1", url + "-2"):  # each merge was dropped, not named; each job restarts exactly
        again = sk.StreamingContext.get_or_create(u, lambda u=u: job.build(u, seed=False))
        done = again.last_batch_time_ms
        got = dict(state_of(again, "state")["set"])
        again.stop()
        assert done == 4000 and got == _reference(str(tmp_path / f"ref{u[-2:]}"), 4), u


def test_a_ctrl_c_during_the_exits_merge_wait_keeps_the_lease_while_the_merge_runs(tmp_path: Path) -> None:
    url = str(tmp_path / "ck")
    _run(url)
    r = _run(url, "--hold-merge", "--ctrl-c")  # batch 3 starts a merge that never ends; Ctrl-C while the exit waits
    assert "interrupted while stopping the job at exit" in r.stderr, r.stderr[-3000:]
    lease = Checkpoint(url).read("lease", "lease")
    assert lease["released"] is False, f"the lease was released while the merge still ran: {lease}"
    assert _newest_snapshot(url) == (4000, None), "a merge that never ended was named"
