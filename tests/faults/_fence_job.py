"""A checkpointed job driven line by line through stdin, for the paused-driver (fencing) tests.

Usage: ``python _fence_job.py CHECKPOINT OUT_DIR TAG LEASE_TIMEOUT_S`` (env ``JOB_STORAGE_OPTIONS``:
fsspec options as JSON). ``rate_stream(2)`` -> ``(TAG, i)`` -> three outputs, in this order:
a ``foreach_batch`` that can hold the batch (``hold output T``), an unfenced user sink that
appends ``"TAG T"`` to ``OUT_DIR/journal`` (every write any driver made, in order), and a
`FileSink` ``OUT_DIR/files`` (fenced). ``hold compute T`` holds batch T while it is computed
(after its plan, before its outputs).

Commands (one per line): ``run N`` (prints ``RAN <last batch ms>``), ``hold compute T`` /
``hold output T`` (when batch T reaches that point: prints ``HELD T`` and waits for a ``go``
line), ``stop``. Prints ``READY <last batch ms>`` once restored; on any error prints
``ERROR <exception class>: <message>`` and exits with status 3.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import streamkeep as sk
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock

HOLD: dict[str, int] = {}


def _hold(phase: str, t: Any) -> None:
    t_ms = int(t.timestamp() * 1000)
    if HOLD.get(phase) == t_ms:
        del HOLD[phase]
        print(f"HELD {t_ms}", flush=True)
        while sys.stdin.readline().strip() != "go":
            pass


class JournalSink:
    """A user-written sink without fencing: records every write it is asked to make."""

    def __init__(self, path: str, tag: str) -> None:
        self.name = "journal"
        self.path = path
        self.tag = tag

    def open(self) -> None:
        pass

    def write(self, batch_time: int, records: list[Any]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.tag} {batch_time}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


def build(ckpt: str, out: str, tag: str, lease_s: float, opts: dict[str, Any] | None) -> sk.StreamingContext:
    ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), lease_timeout_s=lease_s, storage_options=opts)

    def compute(t: Any, batch: Any) -> Any:
        _hold("compute", t)
        return batch

    pairs = ssc.rate_stream(2, name="rate").map(lambda r: (tag, r[0])).transform(compute)
    pairs.foreach_batch(lambda t, b: _hold("output", t))
    pairs.write_to(JournalSink(os.path.join(out, "journal"), tag))
    pairs.write_to(FileSink(os.path.join(out, "files"), name="files", format="jsonl"))
    return ssc


def main() -> int:
    ckpt, out, tag, lease_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    opts = json.loads(os.environ.get("JOB_STORAGE_OPTIONS", "null"))
    ssc = None
    try:
        ssc = sk.StreamingContext.get_or_create(ckpt, lambda: build(ckpt, out, tag, lease_s, opts), storage_options=opts)
        print(f"READY {ssc.last_batch_time_ms or 0}", flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "run":
                ssc.run(max_batches=int(cmd[1]))
                print(f"RAN {ssc.last_batch_time_ms}", flush=True)
            elif cmd[0] == "hold":
                HOLD[cmd[1]] = int(cmd[2])
            elif cmd[0] == "stop":
                break
    except Exception as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        return 3
    finally:
        if ssc is not None:
            ssc.stop()
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
