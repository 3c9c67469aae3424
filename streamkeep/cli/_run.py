"""`streamkeep run APP.py`: run a job script (optionally with the PySpark facade).

The dashboard is on by default for the contexts the script creates (port 4040, or
the next free one; the address is printed), with a console status line in a terminal.
SIGTERM stops the job as Ctrl-C does (a job started with ``start()`` after the batch in
progress commits, a ``run()`` loop abandoning it to be re-run from its plan; the
checkpoint's lease is released), so `docker stop` or a service manager stops it cleanly,
also on the Ray executor (whose ``ray.init`` would replace the handler), and the exit
status is 0 either way (a clean stop, as systemd and docker expect; Ctrl-C of a ``run()``
loop exits 130). A checkpointed ``run()`` job the script did not stop is stopped when the script
ends, as the interpreter's exit would stop it (``StreamingContext._stop_at_exit``), while the log
is still shown.

Exit status (also in ``streamkeep run --help`` and the README): 0 the script ended (or
SIGTERM stopped it); 1 the job failed (also a job started with ``start()`` whose failure the script
never awaited: raised here once the script returns or calls ``sys.exit(0)``; a script that raises or
calls ``sys.exit(n)`` keeps its own status, the failed job stopped first); 2 a usage or configuration error (``ConfigError``);
130 Ctrl-C stopped it, also when the job then stopped cleanly inside ``await_termination()``
(as a shell reports an interrupted command, so a script or CI step running it sees the
interruption).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import runpy
import signal
import sys
import threading
from types import FrameType
from typing import Any

from streamkeep._util import SIGTERM_INTERRUPT, info_shown
from streamkeep.cli._console import console_listener, setup_logging
from streamkeep.context import RUN_DEFAULTS, RUN_EXECUTOR, RUN_INTERRUPTS, exit_deadline
from streamkeep.errors import ConfigError


def _on_start(ssc: Any, sched: Any) -> None:
    if ssc.ui_url is not None and not info_shown(logging.getLogger("streamkeep")):
        # The context logs the address at INFO; print it only where that line is not shown (the app's logging config).
        print(f"streamkeep: dashboard at {ssc.ui_url} (metrics: {ssc.ui_url}metrics)", file=sys.stderr, flush=True)
    sched.listeners.append(console_listener())


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (docker stop, systemd, kill PID) stops the job as Ctrl-C does: after the batch in progress."""
    raise KeyboardInterrupt(SIGTERM_INTERRUPT)


class _Termination:
    """`_terminate`, remembering that SIGTERM came: the stop it asks for is a clean one (exit status 0)."""

    def __init__(self) -> None:
        self.signalled = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True
        _terminate(signum, frame)


def _settle(started: list[Any], app: str, *, report: bool = True) -> list[BaseException]:
    """Shut down the started jobs that failed unawaited; their failures (if `report`, each said in one line).

    The failure was logged with its traceback when it happened; this releases the job (its
    checkpoint's lease) before `run` reports the script's own outcome, so that outcome is the
    last thing said and the exit status is `run`'s, not the at-exit hook's.
    """
    failures = [err for ssc in started if (err := ssc._take_unawaited_failure()) is not None]
    for err in failures if report else ():
        print(
            f"streamkeep: a job {app} started failed and was never awaited ({type(err).__name__}: {err}); stopped it",
            file=sys.stderr,
            flush=True,
        )
    return failures


def run_app(
    app: str, args: list[str], *, pyspark: bool, ui_port: int | None = 4040, ui_host: str = "127.0.0.1", executor: str | None = None
) -> int:
    """Execute `app` as __main__ with `args`; contexts it creates serve the dashboard on `ui_port` (None: off).

    With `executor` ("local", "processes", "ray"), contexts the script creates without an
    executor use that one (the PySpark facade's included).
    """
    if not os.path.isfile(app):
        msg = f"{app}: no such file (the job's Python file to run)"
        raise ConfigError(msg)
    if ui_port is not None and importlib.util.find_spec("prometheus_client") is None:
        # The dashboard is on by default; without its extra (e.g. the demo's install) the job runs without it.
        print(
            "streamkeep: no dashboard: it needs prometheus-client (pip install 'streamkeep[ui]'); running without it (--no-ui: no note)",
            file=sys.stderr,
            flush=True,
        )
        ui_port = None
    if pyspark:
        from streamkeep.compat.pyspark import install

        install()
    undo_logging = setup_logging()
    sys.argv = [app, *args]
    started: list[Any] = []  # the contexts the script started: a failure none of them raised is the job failing

    def on_start(ssc: Any, sched: Any) -> None:
        started.append(ssc)
        _on_start(ssc, sched)

    token = RUN_DEFAULTS.set((ui_port, ui_host, True, on_start))
    ex_token = RUN_EXECUTOR.set(executor)
    # A handler the script installs itself replaces this one.
    on_main = threading.current_thread() is threading.main_thread()
    term = _Termination()
    old_term = signal.signal(signal.SIGTERM, term) if on_main else None
    # SIGINT keeps Python's handler (asyncio.run, trio install their own graceful one): a Ctrl-C that
    # await_termination() turned into a clean stop is noted in `interrupts`, any other one raises out of the script.
    interrupts: list[str] = []
    int_token = RUN_INTERRUPTS.set(interrupts)
    try:
        try:
            runpy.run_path(app, run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):  # the script's own failure status stands
                _settle(started, app)
                raise
        except BaseException:  # the script's error (or Ctrl-C) is what is reported
            _settle(started, app)
            raise
        failures = _settle(started, app, report=False)
        deadline = exit_deadline()  # one bound for all of them, as at exit
        for ssc in started:  # a run() job the script did not stop: stopped now, as at exit, while its log is shown
            ssc._stop_at_exit(deadline)
        if failures:  # start() without await_termination(): its background failure is the job failing (1)
            raise failures[0]
    except KeyboardInterrupt:
        if not term.signalled:  # Ctrl-C: 130, as a shell reports it
            raise
        # A `run()` loop stopped by SIGTERM: the job stopped and released its checkpoint, as asked
        # (a script waiting in await_termination() returns and ends normally): a clean stop, 0.
        return 0
    except ModuleNotFoundError as exc:
        if pyspark or exc.name is None or exc.name.split(".")[0] != "pyspark":
            raise
        msg = (
            f"{app} imports {exc.name}, which is not installed: run it as `streamkeep run --pyspark {app}` "
            f"to use streamkeep's PySpark facade"
        )
        raise ConfigError(msg) from exc
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old_term is None else old_term)
        RUN_INTERRUPTS.reset(int_token)
        RUN_EXECUTOR.reset(ex_token)
        RUN_DEFAULTS.reset(token)
        undo_logging()
    # A Ctrl-C that the job turned into a clean stop (await_termination() returns) is still an interruption
    return 130 if interrupts and not term.signalled else 0
