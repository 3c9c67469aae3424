"""A plain ``python app.py`` (no logging configured) says on stderr when it resumes from its checkpoint.

The start line is logged at INFO, which Python's last-resort handler does not show, so a
restart looked exactly like a fresh start. The library configures no logging; when nothing
did, the start line of a resume comes at WARNING (one line), and `StreamingContext.restored`
/ `StreamingContext.replays_left` tell the program itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamkeep import _faults

pytestmark = pytest.mark.integration

_APP = """
import logging
import sys
import streamkeep as sk

if sys.argv[2:] == ["basic"]:
    logging.basicConfig()  # a root handler, at the default level WARNING: an INFO line is not shown

ckpt = sys.argv[1]

def setup():
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt)
    ssc.rate_stream(10, name="rate").map(lambda r: ("n", 1)).update_state_by_key(
        lambda new, old: (old or 0) + len(new), name="total").foreach_batch(lambda b: b.collect())
    return ssc

ssc = sk.StreamingContext.get_or_create(ckpt, setup)
print("RESTORED", ssc.restored, "REPLAYS", ssc.replays_left, flush=True)
ssc.run(max_batches=2)
ssc.stop()
"""


def _run(app: Path, ckpt: Path, crash_at: str | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}
    if crash_at:
        env[_faults.ENV_VAR] = crash_at
    return subprocess.run([sys.executable, str(app), str(ckpt), *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_script_with_basic_config_at_warning_says_it_resumes(tmp_path: Path) -> None:
    """logging.basicConfig() adds a root handler (so it has handlers) but shows WARNING and up: the INFO line was dropped."""
    app = tmp_path / "app.py"
    app.write_text(_APP)
    ckpt = tmp_path / "ckpt"
    first = _run(app, ckpt, None, "basic")
    assert first.returncode == 0 and "resumed" not in first.stderr, first
    second = _run(app, ckpt, None, "basic")
    assert second.returncode == 0 and "RESTORED True" in second.stdout, second
    lines = [ln for ln in second.stderr.splitlines() if "resumed" in ln]
    assert len(lines) == 1 and lines[0].startswith("WARNING:streamkeep.resume:streamkeep: resumed from the commit of batch "), second.stderr


def test_a_plain_script_says_it_resumes_after_a_kill_before_and_after_its_first_commit(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(_APP)
    ckpt = tmp_path / "ckpt"

    first = _run(app, ckpt, crash_at="plan.after_write@1")  # SIGKILLed with its first batch planned, not committed
    assert first.returncode == -9, first
    assert "RESTORED False REPLAYS 0" in first.stdout and "resumed" not in first.stderr, first

    second = _run(app, ckpt)
    assert second.returncode == 0, second
    assert "RESTORED False REPLAYS 1" in second.stdout, second
    lines = [ln for ln in second.stderr.splitlines() if "resumed" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"streamkeep: resumed (checkpoint {ckpt}): no batch was committed"), second.stderr
    assert "replaying its 1 planned batch first" in lines[0], lines

    third = _run(app, ckpt)
    assert third.returncode == 0, third
    assert "RESTORED True REPLAYS 0" in third.stdout, third
    lines = [ln for ln in third.stderr.splitlines() if "resumed" in ln]
    assert len(lines) == 1 and lines[0].startswith("streamkeep: resumed from the commit of batch "), third.stderr


_STARTED = """
import sys
import streamkeep as sk

ssc = sk.StreamingContext(0.2, checkpoint=None if sys.argv[1] == "-" else sys.argv[1])
ssc.rate_stream(5, name="r").count().foreach_batch(lambda b: b.collect())
ssc.start()
if sys.argv[2] == "stop":
    ssc.stop()
elif sys.argv[2] == "timeout":
    print("WAITED", ssc.await_termination(timeout=0.05), flush=True)
"""


def test_a_script_that_ends_without_awaiting_its_started_job_is_told(tmp_path: Path) -> None:
    """start() without await_termination(): the process ended with the job's daemon thread and said nothing."""
    app = tmp_path / "app.py"
    app.write_text(_STARTED)
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}
    ran = subprocess.run([sys.executable, str(app), str(tmp_path / "a"), "exit"], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran
    assert "the program is exiting while the streaming job it started is still running" in ran.stderr, ran.stderr
    assert "Call ssc.await_termination() after ssc.start()" in ran.stderr, ran.stderr
    stopped = subprocess.run([sys.executable, str(app), str(tmp_path / "b"), "stop"], capture_output=True, text=True, env=env, timeout=120)
    assert stopped.returncode == 0 and "still running" not in stopped.stderr, stopped


def test_the_exit_warning_says_what_happened_with_no_checkpoint_or_after_a_wait_with_a_timeout(tmp_path: Path) -> None:
    """It said a batch "is re-run at the next start" without a checkpoint too, and asked "start() without
    await_termination()?" of a script that had called await_termination(timeout)."""
    app = tmp_path / "app.py"
    app.write_text(_STARTED)
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}

    def warned(ckpt: str, how: str) -> str:
        ran = subprocess.run([sys.executable, str(app), ckpt, how], capture_output=True, text=True, env=env, timeout=120)
        assert ran.returncode == 0 and "still running" in ran.stderr, ran
        return ran.stderr

    bare = warned("-", "exit")
    assert "it has no checkpoint: its state and the batch in progress are lost" in bare and "re-run" not in bare, bare
    assert f"(started at {app}:" in bare and " without await_termination()?)" in bare, bare
    waited = warned(str(tmp_path / "c"), "timeout")
    assert "(await_termination(timeout) returned before it stopped)" in waited, waited
    assert "without await_termination()?" not in waited and "Call ssc.stop() before exiting" in waited, waited
    assert "a batch it had planned but not committed is re-run at the next get_or_create" in waited, waited
