"""`streamkeep run job.py` stopped with SIGTERM (docker stop, systemd, kill PID) stops as Ctrl-C does.

The batch in progress commits, the checkpoint's lease is released (on S3 the next driver
would otherwise wait for it to expire), no traceback, exit status 0, and the next run
resumes right after the last batch the first one ran. A script that runs its job with
`run()` rather than `start()` + `await_termination()` exits 0 as well (it exited 130).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _signalled_job import RATE_TOTAL_JOB, signal_after_batches

from streamkeep.checkpoint import Checkpoint

_JOB = RATE_TOTAL_JOB


def _run_until_terminated(
    app: Path, ckpt: str, batches: int, *, executor: str | None = None, env: dict[str, str] | None = None
) -> tuple[str | None, list[tuple[int, int]], str, str, int]:
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", *(["--executor", executor] if executor else []), str(app), ckpt]
    return signal_after_batches(argv, signal.SIGTERM, batches, env)


def test_sigterm_stops_streamkeep_run_gracefully_releases_the_lease_and_resumes(tmp_path: Path) -> None:
    app = tmp_path / "job.py"
    app.write_text(_JOB)
    ckpt = str(tmp_path / "ckpt")

    env = {**os.environ, "TZ": "Asia/Tokyo"}  # the log's times are UTC, whatever the machine's zone
    at, first, out, err, rc = _run_until_terminated(app, ckpt, batches=3, env=env)
    assert at == "None"
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    assert "terminated (SIGTERM): stopping after the batch in progress" in err, err
    assert "Ctrl-C again" not in err, "a SIGTERM'd job's log told the user to press Ctrl-C"
    last = re.search(r"stopped after \d+ batches; last batch (\S+)", err)
    assert last is not None and f"the next get_or_create resumes after the batch of {last[1]}" in err, err
    assert "RETURNED True stopped" in out
    lease = Checkpoint(ckpt)._read_lease()
    assert lease is not None and lease["released"], f"the lease was not released: {lease}"

    at, second, out, err, rc = _run_until_terminated(app, ckpt, batches=1)
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert at == str(first[-1][0]), f"the second run resumed after {at}, not after the first run's last batch {first[-1][0]}"
    assert second[0][1] > first[-1][1], f"the count restarted: first run ended at {first[-1]}, second began at {second[0]}"


@pytest.mark.ray
def test_sigterm_stops_a_job_on_the_ray_executor_gracefully_too(tmp_path: Path, ray_address: str) -> None:
    """ray.init replaces the SIGTERM handler with sys.exit: the job died mid-batch with SystemExit, its lease held."""
    app = tmp_path / "job.py"
    app.write_text(_JOB)
    ckpt = str(tmp_path / "ckpt")
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    at, first, out, err, rc = _run_until_terminated(app, ckpt, batches=3, executor="ray", env=env)
    assert at == "None"
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "RETURNED True stopped" in out, out
    lease = Checkpoint(ckpt)._read_lease()
    assert lease is not None and lease["released"], f"the lease was not released: {lease}"
    assert Checkpoint(ckpt).commits()[0].data["partitioning"]["executor"] == "ray"


_RUN_JOB = _JOB.replace(
    'ssc.start()\nprint("RETURNED", ssc.await_termination(), ssc.state, flush=True)\n',
    'ssc.run()\nprint("NOT REACHED", flush=True)\n',
)


def test_sigterm_of_a_run_loop_exits_0_too_and_resumes(tmp_path: Path) -> None:
    """systemd and docker read a non-zero status after their SIGTERM as a failure: both ways of running a job exit 0."""
    assert "ssc.run()" in _RUN_JOB
    app = tmp_path / "job.py"
    app.write_text(_RUN_JOB)
    ckpt = str(tmp_path / "ckpt")

    at, first, out, err, rc = _run_until_terminated(app, ckpt, batches=3)
    assert at == "None"
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err and "NOT REACHED" not in out, err
    assert "terminated (SIGTERM): a batch in progress that had not committed is abandoned" in err, err
    lease = Checkpoint(ckpt)._read_lease()
    assert lease is not None and lease["released"], f"the lease was not released: {lease}"

    at, second, out, err, rc = _run_until_terminated(app, ckpt, batches=1)
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert at is not None and int(at) >= first[0][0], f"the second run did not resume from the first's commits: {at}"
    both = sorted(set(first) | set(second))
    assert len({t for t, _ in both}) == len(both), f"a batch re-run gave another count: {first} then {second}"
    assert [n for _, n in both] == sorted(n for _, n in both) and second[0][1] > first[0][1], f"{first} then {second}"



def test_a_second_sigterm_abandons_the_batch_in_progress_and_says_sigterm(tmp_path: Path) -> None:
    """The second signal's log line said "interrupted again" after a SIGTERM; it names SIGTERM now."""
    app = tmp_path / "job.py"
    slow = _JOB.replace("sum(v for _, v in batch.collect()), flush=True)", "sum(v for _, v in batch.collect()), flush=True)\n    time.sleep(30)")
    app.write_text(slow.replace("import sys\n", "import sys, time\n", 1))
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", str(app), str(tmp_path / "ckpt")]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("BATCH"):  # the first batch's output is sleeping: the batch is in progress
                break
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "terminated (SIGTERM): stopping after the batch in progress" in err, err
    assert "terminated again (SIGTERM): the batch in progress is abandoned" in err, err
    assert "interrupted again" not in err and "Traceback" not in err, err
