"""A job started with ``start()`` that fails in the background of a script that never awaits it.

The script exited 0 (the at-exit hook said nothing of a failed job) and the failure was logged as one
line without its traceback, so a supervisor (systemd, Kubernetes) took the failure for success. Now
the failure is logged with its traceback when it happens, and the process exits 1; a REPL keeps its
own exit status, and `streamkeep run` reports the failure as a failed job (1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamkeep import _faults

pytestmark = pytest.mark.integration

# The job fails in its first batch. The script then does its own thing: it waits (bounded) until the
# job's thread has ended, says so, and returns (or, with "await", calls await_termination()).
_APP = """
import atexit, sys, threading, time
import streamkeep as sk

atexit.register(lambda: print("USER HOOK", file=sys.stderr, flush=True))  # registered first: runs after streamkeep's

def boom(r):
    raise RuntimeError("bad record " + str(r))

ssc = sk.StreamingContext(0.2, checkpoint=None if sys.argv[1] == "-" else sys.argv[1])
ssc.queue_stream([[7]], name="q").map(boom).foreach_batch(lambda b: b.collect())
ssc.start()
deadline = time.monotonic() + 60
while any(t.name == "streamkeep-scheduler" for t in threading.enumerate()) and time.monotonic() < deadline:
    time.sleep(0.01)
print("MAIN GOES ON", file=sys.stderr, flush=True)
if sys.argv[2] == "await":
    ssc.await_termination()
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}


def _last_line(err: str) -> str:
    """The last line of stderr before the script's own at-exit hook's."""
    return [ln for ln in err.splitlines() if ln != "USER HOOK"][-1]


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "app.py"
    app.write_text(_APP)
    return app


@pytest.mark.parametrize("ckpt", ["-", "ckpt"])
def test_an_unawaited_background_failure_is_logged_with_its_traceback_and_exits_1(tmp_path: Path, ckpt: str) -> None:
    app = _app(tmp_path)
    where = "-" if ckpt == "-" else str(tmp_path / ckpt)
    ran = subprocess.run([sys.executable, str(app), where, "return"], capture_output=True, text=True, env=_env(), timeout=120)
    err = ran.stderr
    assert ran.returncode == 1, f"exit status {ran.returncode}\n{err}"
    # logged when it happened, with the user function's traceback: before the script went on
    failed_at = err.find("streaming job failed at batch")
    assert 0 <= failed_at < err.find("Traceback") < err.find("RuntimeError: bad record 7") < err.find("MAIN GOES ON"), err
    assert "never called ssc.await_termination()" in err and "exiting with status 1" in err, err
    assert "still running" not in err, err
    assert err.find("exiting with status 1") < err.find("USER HOOK"), err  # the program's own at-exit hooks still ran
    if ckpt != "-":  # the at-exit path released the checkpoint: a next start can claim it
        again = subprocess.run([sys.executable, str(app), where, "return"], capture_output=True, text=True, env=_env(), timeout=120)
        assert again.returncode == 1 and "CheckpointInUseError" not in again.stderr, again.stderr
    # a script that awaits gets the failure raised (uncaught: status 1), and no at-exit message
    awaited = subprocess.run([sys.executable, str(app), where, "await"], capture_output=True, text=True, env=_env(), timeout=120)
    assert awaited.returncode == 1 and "UserFunctionError" in _last_line(awaited.stderr), awaited.stderr
    assert "never called ssc.await_termination()" not in awaited.stderr, awaited.stderr


def test_an_interactive_session_keeps_its_exit_status(tmp_path: Path) -> None:
    # python -i: the REPL reads stdin (empty: it exits at once) after the script; its status is its own
    argv = [sys.executable, "-i", str(_app(tmp_path)), "-", "return"]
    ran = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stderr
    assert "never called ssc.await_termination()" in ran.stderr and "exiting with status 1" not in ran.stderr, ran.stderr


def test_streamkeep_run_reports_an_unawaited_background_failure_as_the_job_failing(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", str(_app(tmp_path)), "-", "return"]
    ran = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert ran.returncode == 1, ran.stderr
    assert _last_line(ran.stderr).startswith("streamkeep: UserFunctionError:"), ran.stderr
    assert "never called ssc.await_termination()" not in ran.stderr, ran.stderr  # the CLI reported it, not the at-exit hook
