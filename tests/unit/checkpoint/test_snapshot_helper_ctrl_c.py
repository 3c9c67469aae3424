"""A Ctrl-C in the terminal reaches the driver, not the helper process merging a snapshot.

The terminal sends SIGINT to its whole foreground process group. The helper (a mid-size or
big state's merge on a local disk) used to be in the driver's group: it died with a
KeyboardInterrupt, the driver logged the traceback and merged again in its own thread while
stopping. The helper now runs in its own session (it still dies with the driver).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_JOB = """
import os, signal, sys, threading, time
import streamkeep as sk
import streamkeep.scheduler._state_writer as w

url = sys.argv[1]

def bump(key, value, state):
    state.update(state.get_option(0) + value)

def setup():
    ssc = sk.StreamingContext(1.0, checkpoint=url, snapshot_every=2)
    pairs = ssc.rate_stream(100, name="rate").map(lambda r: (f"k{(r[0] * 7919) % 100000}", 1))
    pairs.map_with_state(bump, name="s", initial=[(f"k{i}", 0) for i in range(100000)]).foreach_batch(lambda b: None)
    return ssc

helper = w._run_helper

def ctrl_c_while_merging(*a, **k):  # a terminal's Ctrl-C: SIGINT to the whole process group
    threading.Thread(target=lambda: (time.sleep(0.15), os.killpg(os.getpgrp(), signal.SIGINT)), daemon=True).start()
    out = helper(*a, **k)
    print("HELPER", "ok" if out is not None else "failed", flush=True)
    return out

w._run_helper = ctrl_c_while_merging
signal.signal(signal.SIGINT, lambda *a: print("DRIVER SIGINT", flush=True))
ssc = sk.StreamingContext.get_or_create(url, setup)
ssc.run(max_batches=6)
ssc.stop()
"""


def test_a_terminal_ctrl_c_does_not_kill_the_snapshot_helper(tmp_path: Path) -> None:
    app = tmp_path / "job.py"
    app.write_text(_JOB)
    # its own session: the job's SIGINT to its process group must not reach pytest
    proc = subprocess.run(
        [sys.executable, str(app), str(tmp_path / "ckpt")], capture_output=True, text=True, timeout=120, start_new_session=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "DRIVER SIGINT" in proc.stdout, proc.stdout  # the Ctrl-C was sent while a helper merged
    assert "HELPER ok" in proc.stdout and "HELPER failed" not in proc.stdout, (proc.stdout, proc.stderr)
    assert "KeyboardInterrupt" not in proc.stderr, proc.stderr
