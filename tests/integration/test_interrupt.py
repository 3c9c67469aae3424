"""Ctrl-C in a script that called start() and await_termination() stops the job gracefully.

The batch in progress commits, the checkpoint's lease is released (on S3 another
driver could otherwise not start until it expires), no traceback is printed, and the
next run resumes exactly after the last batch the first one ran.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from _signalled_job import signal_after_batches

from streamkeep.checkpoint import Checkpoint

_JOB = """
import json, os, sys
import streamkeep as sk

ckpt = sys.argv[1]
opts = json.loads(os.environ["JOB_STORAGE_OPTIONS"]) if os.environ.get("JOB_STORAGE_OPTIONS") else None

def show(t, batch):
    print("BATCH", int(t.timestamp() * 1000), sum(v for _, v in batch.collect()), flush=True)

def setup():
    ssc = sk.StreamingContext(0.1, checkpoint=ckpt, storage_options=opts, lease_timeout_s=120)
    total = ssc.rate_stream(20, name="rate").map(lambda r: ("n", 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new), name="total")
    total.foreach_batch(show)
    return ssc

ssc = sk.StreamingContext.get_or_create(ckpt, setup, storage_options=opts)
print("RESTORED", ssc.last_batch_time_ms if ssc.restored else None, flush=True)
ssc.start()
print("RETURNED", ssc.await_termination(), ssc.state, flush=True)
"""


def _run_until_interrupted(ckpt: str, env: dict[str, str], batches: int) -> tuple[int | None, list[tuple[int, int]], str, str, int]:
    """Run the job, SIGINT it after `batches` batches: (restored at, [(batch time, total)], stdout, stderr, rc)."""
    restored, seen, out, err, rc = signal_after_batches([sys.executable, "-c", _JOB, ckpt], signal.SIGINT, batches, env)
    return (None if restored == "None" else int(restored)), seen, out, err, rc


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.integration)])
def test_ctrl_c_stops_gracefully_releases_the_lease_and_resumes(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOB_STORAGE_OPTIONS"}
    opts: dict[str, Any] | None = None
    if where == "s3":
        server = request.getfixturevalue("s3_server")
        ckpt = request.getfixturevalue("s3_url")
        opts = server.storage_options
        env["JOB_STORAGE_OPTIONS"] = json.dumps(opts)
    else:
        ckpt = str(tmp_path / "ckpt")

    at, first, out, err, rc = _run_until_interrupted(ckpt, env, batches=3)
    assert at is None
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted: stopping after the batch in progress" in err
    assert "RETURNED True stopped" in out
    if where == "s3":
        lease = Checkpoint(ckpt, storage_options=opts)._read_lease()
        assert lease is not None and lease["released"], f"the lease was not released: {lease}"

    at, second, out, err, rc = _run_until_interrupted(ckpt, env, batches=1)
    assert rc == 0, f"exit status {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert at == first[-1][0], f"the second run resumed after {at}, not after the first run's last batch {first[-1][0]}"
    assert second[0][1] > first[-1][1], f"the count restarted: first run ended at {first[-1]}, second began at {second[0]}"
