"""A text_file_stream job run as a child process by test_text_file_start.py.

Usage: ``python _textfile_job.py CHECKPOINT IN_DIR OUT_DIR MODE``. The job is
resumed with `StreamingContext.get_or_create` (which opens the source: a fresh
job takes the list of files to skip then) and prints ``READY``. MODE ``wait``
then blocks on stdin until the parent kills it (a driver that dies before its
first plan); MODE ``run`` runs two batches, each written by a `FileSink` (one
line per input line) to ``OUT_DIR``. With ``JOB_PLAN_FILES=1`` in the environment each plan is a
file of its own (the layout of S3 and other fsspec storages) instead of a plan log.
"""

from __future__ import annotations

import os
import sys

import streamkeep as sk
from streamkeep.checkpoint import _checkpoint
from streamkeep.sinks import FileSink
from streamkeep.testing import ManualClock


def main() -> int:
    ckpt, inp, out, mode = sys.argv[1:5]
    if os.environ.get("JOB_PLAN_FILES") == "1":
        _checkpoint.PLAN_LOGS = False

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock())
        ssc.text_file_stream(inp, name="files").write_to(FileSink(out, name="lines"))
        return ssc

    ssc = sk.StreamingContext.get_or_create(ckpt, setup)
    print("READY", flush=True)
    try:
        if mode == "wait":
            sys.stdin.readline()
            return 3  # the parent was meant to kill this process
        ssc.run(max_batches=2)
    finally:
        ssc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
