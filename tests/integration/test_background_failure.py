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
elif sys.argv[2] == "raise":
    raise ValueError("SCRIPT ERROR")
elif sys.argv[2].startswith("exit"):
    sys.exit(int(sys.argv[2][4:]))
"""

_START_LINE = _APP.splitlines().index("ssc.start()") + 1  # in the file (its first line is the empty one after the quotes)


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
    assert f"the streaming job started at {app}:{_START_LINE} failed" in err, err  # which job: where it was started
    assert "still running" not in err, err
    assert err.find("exiting with status 1") < err.find("USER HOOK"), err  # the program's own at-exit hooks still ran
    if ckpt != "-":  # the at-exit path released the checkpoint: a next start can claim it
        again = subprocess.run([sys.executable, str(app), where, "return"], capture_output=True, text=True, env=_env(), timeout=120)
        assert again.returncode == 1 and "CheckpointInUseError" not in again.stderr, again.stderr
    # a script that awaits gets the failure raised (uncaught: status 1), and no at-exit message
    awaited = subprocess.run([sys.executable, str(app), where, "await"], capture_output=True, text=True, env=_env(), timeout=120)
    lines = [ln for ln in awaited.stderr.splitlines() if ln != "USER HOOK"]
    assert awaited.returncode == 1 and "UserFunctionError" in lines[-1], awaited.stderr
    assert "never called ssc.await_termination()" not in awaited.stderr, awaited.stderr
    # logged with its traceback when it failed (nobody waited yet), and raised later with its traceback
    # intact: a program that catches and logs the error itself needs its frames
    assert awaited.stderr.count('raise RuntimeError("bad record "') == 2, awaited.stderr


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


def test_streamkeep_run_stops_an_unawaited_failed_job_before_the_scripts_own_error_or_exit(tmp_path: Path) -> None:
    """A script that raises or calls sys.exit(n) skipped the CLI's report: the at-exit hook's ERROR came last, status 1."""
    app = str(_app(tmp_path))
    cli = [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", app, "-"]
    raised = subprocess.run([*cli, "raise"], capture_output=True, text=True, env=_env(), timeout=120)
    assert raised.returncode == 1 and _last_line(raised.stderr) == "ValueError: SCRIPT ERROR", raised.stderr
    assert "was never awaited (UserFunctionError" in raised.stderr, raised.stderr
    exited = subprocess.run([*cli, "exit3"], capture_output=True, text=True, env=_env(), timeout=120)
    assert exited.returncode == 3 and "was never awaited (UserFunctionError" in _last_line(exited.stderr), exited.stderr
    for ran in (raised, exited):
        assert "never called ssc.await_termination()" not in ran.stderr, ran.stderr
    # sys.exit(0) with a failed job is the job failing
    ok = subprocess.run([*cli, "exit0"], capture_output=True, text=True, env=_env(), timeout=120)
    assert ok.returncode == 1 and _last_line(ok.stderr).startswith("streamkeep: UserFunctionError:"), ok.stderr


def test_a_script_that_imports_ipython_is_not_an_interactive_session(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "IPython"  # an installed IPython, no shell running
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("def get_ipython():\n    return None\n")
    app = tmp_path / "app.py"
    app.write_text("import IPython\n" + _APP)
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    ran = subprocess.run([sys.executable, str(app), "-", "return"], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 1 and "exiting with status 1" in ran.stderr, ran.stderr


# Two contexts: one fails, one keeps running; a program hook registered after both start()s.
_TWO = """
import atexit, sys
import streamkeep as sk

def boom(r):
    raise RuntimeError("bad record " + str(r))

bad = sk.StreamingContext(0.2)
bad.queue_stream([[7]], name="q").map(boom).foreach_batch(lambda b: b.collect())
bad.start()
good = sk.StreamingContext(600.0)
good.queue_stream([[1]], name="q").foreach_batch(lambda b: b.collect())
good.start()
atexit.register(lambda: print("LATE HOOK", file=sys.stderr, flush=True))
bad._done.wait(60)
"""


def test_the_exit_status_hook_runs_every_other_at_exit_hook_once(tmp_path: Path) -> None:
    """It re-ran every hook registered after start() (a program hook ran twice, the other job's warning printed twice)."""
    app = tmp_path / "two.py"
    app.write_text(_TWO)
    ran = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, env=_env(), timeout=120)
    err = ran.stderr
    assert ran.returncode == 1, err
    assert err.count("LATE HOOK") == 1 and err.count("still running") == 1, err
    assert err.count("never called ssc.await_termination()") == 1, err
    assert err.find("LATE HOOK") < err.find("exiting with status 1"), err  # registered after start(): it ran first (LIFO), once
    under_run = subprocess.run(
        [sys.executable, "-m", "streamkeep.cli", "run", "--no-ui", str(app)], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert under_run.returncode == 1 and under_run.stderr.count("LATE HOOK") == 1, under_run.stderr
    assert under_run.stderr.count("still running") == 1, under_run.stderr


_FORK = """
import os, sys
import streamkeep as sk

def boom(r):
    raise RuntimeError("bad record " + str(r))

ssc = sk.StreamingContext(0.2)
ssc.queue_stream([[7]], name="q").map(boom).foreach_batch(lambda b: b.collect())
ssc.start()
ssc._done.wait(60)
pid = os.fork()
if pid == 0:
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("CHILD EXIT", os.waitstatus_to_exitcode(status), file=sys.stderr, flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_that_exits_does_not_report_its_parents_job(tmp_path: Path) -> None:
    """The child ran the parent's at-exit hook: it logged the parent's ERROR, exited 1 and released the parent's job."""
    app = tmp_path / "fork.py"
    app.write_text(_FORK)
    ran = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, env=_env(), timeout=120)
    assert ran.returncode == 1 and "CHILD EXIT 0" in ran.stderr, ran.stderr
    assert ran.stderr.count("never called ssc.await_termination()") == 1, ran.stderr  # the parent's, after the child's exit
    assert ran.stderr.find("CHILD EXIT 0") < ran.stderr.find("never called ssc.await_termination()"), ran.stderr


_TIMED_OUT = """
import sys, threading
import streamkeep as sk

go = threading.Event()

def boom(r):
    go.wait(60)
    raise RuntimeError("bad record " + str(r))

ssc = sk.StreamingContext(0.2)
ssc.queue_stream([[7]], name="q").map(boom).foreach_batch(lambda b: b.collect())
ssc.start()
assert ssc.await_termination(0.05) is False  # the first batch waits for `go`
go.set()
ssc._done.wait(60)
"""


def test_the_exit_report_says_an_await_termination_timeout_returned_before_the_failure(tmp_path: Path) -> None:
    app = tmp_path / "timed.py"
    app.write_text(_TIMED_OUT)
    ran = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, env=_env(), timeout=120)
    assert ran.returncode == 1, ran.stderr
    assert "await_termination(timeout) returned before it failed" in ran.stderr, ran.stderr
    assert "never called ssc.await_termination()" not in ran.stderr, ran.stderr


_PYTEST_CASE = """
import streamkeep as sk

def boom(r):
    raise RuntimeError("bad record " + str(r))

def test_starts_and_forgets():
    ssc = sk.StreamingContext(0.2)
    ssc.queue_stream([[7]], name="q").map(boom).foreach_batch(lambda b: b.collect())
    ssc.start()
    ssc._done.wait(60)
"""


def test_under_pytest_the_report_names_the_test_that_started_the_job_and_what_to_do(tmp_path: Path) -> None:
    case = tmp_path / "test_case.py"
    case.write_text(_PYTEST_CASE)
    line = _PYTEST_CASE.splitlines().index("    ssc.start()") + 1
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path), str(case)]
    ran = subprocess.run(argv, capture_output=True, text=True, env=_env(), timeout=120, cwd=tmp_path)
    assert ran.returncode == 1 and "1 passed" in ran.stdout, ran.stdout + ran.stderr
    assert f"started at {case}:{line} failed" in ran.stderr, ran.stderr
    assert "in the test or its teardown" in ran.stderr, ran.stderr
