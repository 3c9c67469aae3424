"""The exit status of a program whose started job failed in the background and was never awaited.

A script that calls ``ssc.start()`` and then ends (or sleeps, or does its own work)
without ``await_termination()`` never sees the job's failure raised; Python then exits 0
and a supervisor (systemd, Kubernetes) takes the failure for success. Nothing an at-exit
hook raises changes Python's exit status, so `exit_failed` ends the process itself: it
runs the other at-exit hooks first (logging's flush among them), flushes the standard
streams, then exits 1. Interactive sessions (a REPL, ``python -i``, IPython, notebooks)
keep their own exit: there the ERROR line is the report.

Imports nothing of streamkeep (a leaf).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections.abc import Callable

#: The exit status of a program whose started job failed and was never awaited (as `streamkeep run`'s "the job failed").
FAILED_STATUS = 1


def interactive() -> bool:
    """True in a REPL, under ``python -i``, IPython or a notebook kernel: no forced exit status there."""
    return bool(sys.flags.interactive) or hasattr(sys, "ps1") or "IPython" in sys.modules or "ipykernel" in sys.modules


def exit_failed(me: Callable[[], None]) -> None:
    """From the at-exit hook `me`: run the other at-exit hooks, flush stdout and stderr, exit with `FAILED_STATUS`."""
    atexit.unregister(me)
    atexit._run_exitfuncs()  # the hooks registered before `me`, which a plain os._exit would skip
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(FAILED_STATUS)
