"""The exit status of a program whose started job failed in the background and was never awaited.

A script that calls ``ssc.start()`` and then ends (or sleeps, or does its own work)
without ``await_termination()`` never sees the job's failure raised; Python then exits 0
and a supervisor (systemd, Kubernetes) takes the failure for success. Nothing an at-exit
hook raises changes Python's exit status, so a context's at-exit hook only logs, shuts the
job down and calls `request_failed_exit`; `_final`, registered when this module is imported
(before any context's or program's hook, so atexit, last in first out, runs it after them),
then flushes logging and the standard streams and ends the process with ``os._exit(1)``.
``os._exit`` skips the interpreter's own cleanup (buffers of files never closed, ``__del__``
methods, hooks registered before streamkeep was imported). Interactive sessions (a REPL,
``python -i``, IPython, notebooks) keep their own exit: there the ERROR line is the report.

Imports nothing of streamkeep (a leaf).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

#: The exit status of a program whose started job failed and was never awaited (as `streamkeep run`'s "the job failed").
FAILED_STATUS = 1

_requested_by: int | None = None  # the pid whose at-exit hook asked for FAILED_STATUS (not a forked child's)


def interactive() -> bool:
    """True in a REPL, under ``python -i``, IPython or a notebook kernel: no forced exit status there."""
    if sys.flags.interactive or hasattr(sys, "ps1") or "ipykernel" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")  # a script may merely import IPython: only a running shell counts
    get = getattr(ipython, "get_ipython", None)
    try:
        return get is not None and get() is not None
    except Exception:  # an IPython too broken to say: not a session
        return False


def request_failed_exit() -> None:
    """From an at-exit hook: end this process with `FAILED_STATUS` once the other at-exit hooks ran."""
    global _requested_by
    _requested_by = os.getpid()


def _final() -> None:
    """The last at-exit hook: if asked in this process, flush logging and the standard streams, then exit 1."""
    if _requested_by != os.getpid():
        return
    with contextlib.suppress(Exception):
        logging.shutdown()  # its own at-exit hook was registered before this one: os._exit skips it
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(FAILED_STATUS)


atexit.register(_final)
