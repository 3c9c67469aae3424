"""Run a job's process, send it a signal after some batches, and collect what it printed.

The job prints ``RESTORED <batch time or None>`` once started and ``BATCH <time> <total>``
per batch (the interrupt and SIGTERM tests' jobs).

The job starts with the signal's default disposition whatever the test runner's is: a
shell running a command in the background (``./scripts/test.sh &``, a CI step started
that way, ``nohup``) ignores SIGINT for it, an ignored signal stays ignored across
``exec``, and Python then installs no KeyboardInterrupt handler, so the job would never
see the Ctrl-C the test sends (it ran on until the 60 s timeout).
"""

from __future__ import annotations

import re
import subprocess
import sys

# exec's `argv` with `sig` reset to its default disposition (Python's startup then installs its own handler)
_DEFAULT_THEN_EXEC = "import os, signal, sys; signal.signal(int(sys.argv[1]), signal.SIG_DFL); os.execv(sys.argv[2], sys.argv[2:])"


def with_default_disposition(argv: list[str], sig: int) -> list[str]:
    """`argv` started through an exec that first resets `sig` to its default disposition."""
    return [sys.executable, "-c", _DEFAULT_THEN_EXEC, str(int(sig)), *argv]


def signal_after_batches(
    argv: list[str], sig: int, batches: int, env: dict[str, str] | None = None
) -> tuple[str, list[tuple[int, int]], str, str, int]:
    """Run `argv`, send `sig` after `batches` batches: (RESTORED's word, [(batch time, total)], stdout, stderr, rc)."""
    with subprocess.Popen(with_default_disposition(argv, sig), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        seen: list[tuple[int, int]] = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.match(r"BATCH (\d+) (\d+)", line):
                seen.append((int(m[1]), int(m[2])))
                if len(seen) == batches:
                    proc.send_signal(sig)
                    break
        try:
            rest, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
            out = "".join(lines) + rest
            msg = f"the job did not stop within 60 s of signal {int(sig)}\nstdout (last 2000 chars):\n{out[-2000:]}\nstderr:\n{err[-4000:]}"
            raise AssertionError(msg) from None
    out = "".join(lines) + rest
    seen += [(int(a), int(b)) for a, b in re.findall(r"^BATCH (\d+) (\d+)$", rest, re.M)]  # the batch in progress
    restored = re.search(r"^RESTORED (\S+)$", out, re.M)
    assert restored is not None, f"the job did not start\nstdout:\n{out}\nstderr:\n{err}"
    return restored[1], seen, out, err, proc.returncode


#: A job script (argv[1]: its checkpoint) of the shape the module docstring describes: a rate source, one running total.
RATE_TOTAL_JOB = """
import sys
import streamkeep as sk

ckpt = sys.argv[1]

def show(t, batch):
    print("BATCH", int(t.timestamp() * 1000), sum(v for _, v in batch.collect()), flush=True)

def setup():
    ssc = sk.StreamingContext(0.1, checkpoint=ckpt, lease_timeout_s=120)
    total = ssc.rate_stream(20, name="rate").map(lambda r: ("n", 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new), name="total")
    total.foreach_batch(show)
    return ssc

ssc = sk.StreamingContext.get_or_create(ckpt, setup)
print("RESTORED", ssc.last_batch_time_ms if ssc.restored else None, flush=True)
ssc.start()
print("RETURNED", ssc.await_termination(), ssc.state, flush=True)
"""
