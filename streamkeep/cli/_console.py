"""Console progress for `streamkeep run` and `streamkeep demo`.

In a terminal (and with rich installed, the ``ui`` extra): one live status line
(batch time, records/s, delays, Kafka lag, state keys), redrawn in place. Otherwise:
plain log lines (the job's INFO logs, plus a progress line every 10 s).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from streamkeep.scheduler import BatchInfo, JobStarted, JobStopped, StreamingListener
from streamkeep.scheduler._events import iso_ms
from streamkeep.scheduler._observe import describe_start

log = logging.getLogger("streamkeep.progress")


def setup_logging() -> Callable[[], None]:
    """INFO logs of streamkeep on stderr, unless the application configured logging itself; returns the undo."""
    root = logging.getLogger()
    sk = logging.getLogger("streamkeep")
    if root.handlers or sk.handlers:
        return lambda: None
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # An application that configures logging once it runs (logging.basicConfig in the script) gets the
    # lines through its own handlers: this one steps aside rather than print each line twice.
    h.addFilter(lambda record: not root.handlers and sk.handlers == [h])
    level = sk.level
    sk.addHandler(h)
    sk.setLevel(logging.INFO)

    def undo() -> None:
        sk.removeHandler(h)
        sk.setLevel(level)

    return undo


def status_line(info: BatchInfo, interval_ms: int) -> str:
    """One line about the last batch: time, rate, delays, lag, state keys."""
    rate = info.num_records / (interval_ms / 1000) if interval_ms else 0.0
    parts = [
        f"batch {iso_ms(info.batch_time_ms)[11:23]}",
        f"{rate:,.0f} rec/s",
        f"sched {info.scheduling_delay_ms} ms",
        f"proc {info.processing_delay_ms} ms",
    ]
    lag = sum(n for p in info.kafka_lag.values() for n in p.values())
    if info.kafka_lag:
        parts.append(f"lag {lag:,}")
    if info.state:
        parts.append(f"state {sum(s.keys for s in info.state.values()):,} keys")
    return " | ".join(parts)


class ProgressLog(StreamingListener):
    """A progress log line at most every `every_s` seconds (for logs that are not a terminal)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.interval_ms = 1000
        self._next = 0.0

    def on_job_started(self, event: JobStarted) -> None:
        """Remember the interval."""
        self.interval_ms = event.batch_interval_ms

    def on_batch_completed(self, info: BatchInfo) -> None:
        """Log a progress line when due."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every_s
            log.info("%s", status_line(info, self.interval_ms), extra={"batch_time_ms": info.batch_time_ms, "batch_time": iso_ms(info.batch_time_ms)})


class ConsoleStatus(StreamingListener):
    """One live status line in a terminal (rich); what the job starts doing is printed above it."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self.console = console or Console(stderr=True)
        self.live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False, redirect_stdout=True, redirect_stderr=True)
        self.interval_ms = 1000
        self._started = False

    def on_job_started(self, event: JobStarted) -> None:
        """Say in words what happens, then show the line."""
        self.interval_ms = event.batch_interval_ms
        self.console.print(describe_start(event))
        self.live.start()
        self._started = True

    def on_batch_completed(self, info: BatchInfo) -> None:
        """Update the line."""
        self.live.update(self._text(status_line(info, self.interval_ms)))

    def on_job_stopped(self, event: JobStopped) -> None:
        """Leave the last line on screen."""
        if self._started:
            self.live.stop()
            self._started = False


def console_listener(stream: Any = None) -> StreamingListener:
    """`ConsoleStatus` in a terminal with rich installed; `ProgressLog` otherwise."""
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        try:
            return ConsoleStatus()
        except ImportError:
            pass
    return ProgressLog()
