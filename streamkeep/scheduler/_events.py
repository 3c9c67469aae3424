"""Listener events: what a job tells `StreamingContext.add_listener` listeners, and the job's logs.

The scheduler builds these events only when at least one listener is registered
(the hot path pays nothing otherwise). A listener is any object; it receives the
callbacks it defines (subclass `StreamingListener` to get no-op defaults):

====================  ====================  ==========================================
callback              event                 when
====================  ====================  ==========================================
on_job_started        `JobStarted`          first ``start()``/``run()``: fresh or restored
on_batch_planned      `BatchPlanned`        the batch's input is planned (durable with a checkpoint)
on_batch_completed    `BatchInfo`           the batch ran and committed
on_batch_replayed     `BatchReplayed`       recovery re-ran a planned-but-uncommitted batch
on_snapshot_completed `SnapshotCompleted`   a full state snapshot was taken (small state) or merged in the background
on_error              `ErrorInfo`           the job failed
on_job_stopped        `JobStopped`          the job stopped (after its last commit)
====================  ====================  ==========================================

Every event carries ``batch_time_ms`` (the batch it concerns; for start/stop the
next/last batch). An exception raised by a listener is logged and the job goes
on, as on Spark's listener bus: observers never stop a job.

Must not import context, cli or ui.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("streamkeep.scheduler")
_listener_log = logging.getLogger("streamkeep.listener")


def iso_ms(t_ms: int | None) -> str:
    """A batch time (ms since the epoch) as an ISO-8601 UTC time with milliseconds ("2024-05-01T12:00:03.500Z")."""
    if t_ms is None:
        return "-"
    d = _dt.datetime.fromtimestamp(t_ms / 1000, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t_ms % 1000:03d}Z"


def batch_extra(t_ms: int | None, operator: str | None = None) -> dict[str, Any]:
    """The ``extra`` of a log record about a batch: ``batch_time_ms``, ``batch_time`` (ISO) and ``operator``."""
    out: dict[str, Any] = {"batch_time_ms": t_ms, "batch_time": iso_ms(t_ms)}
    if operator is not None:
        out["operator"] = operator
    return out


# ----------------------------------------------------------------------------- events


@dataclass
class StateInfo:
    """One stateful operator's state after a batch.

    Attributes:
        keys: keys (windows: records) held.
        bytes: encoded size of the state (its codec, as a snapshot stores it), measured at
            batch `bytes_at_ms`: exactly at every snapshot, and in between re-measured only
            as often as costs under 2% of the job's time; None before the first measurement.
        bytes_at_ms: the batch time at which `bytes` was measured.
    """

    keys: int
    bytes: int | None = None
    bytes_at_ms: int | None = None


@dataclass
class BatchInfo:
    """What listeners learn about a batch: in ``on_batch_completed`` once it is committed, and in
    ``on_batch_started`` once its input is read (then ``processing_end_ms`` is -1 and only the
    first five fields are set).

    The first five fields are the original ones (positional); the others have defaults.
    Times ``*_ms`` ending in ``_ms`` without a ``processing_`` prefix are durations in ms.
    """

    batch_time_ms: int
    num_records: int
    submission_ms: int
    processing_start_ms: int
    processing_end_ms: int  # -1 while the batch runs
    #: records read per source name
    records_per_source: dict[str, int] = field(default_factory=dict)
    #: records per source partition ("topic:partition" for Kafka), for sources that report partitions
    records_per_partition: dict[str, dict[str, int]] = field(default_factory=dict)
    #: where the processing time went: planning the input, reading it and computing the graph,
    #: running the outputs (sinks, foreach_batch), and the checkpoint commit
    plan_ms: float = 0.0
    compute_ms: float = 0.0
    outputs_ms: float = 0.0
    commit_ms: float = 0.0
    #: time per stateful operator (including the per-record operators fused before it) and per output
    operator_ms: dict[str, float] = field(default_factory=dict)
    #: state per stateful operator name
    state: dict[str, StateInfo] = field(default_factory=dict)
    #: bytes this batch wrote to the checkpoint (plan, deltas, commit record) and the time it took
    checkpoint_bytes: int = 0
    checkpoint_write_ms: float = 0.0
    #: a full snapshot of the state as of this batch was taken (a small state's, encoded in the batch:
    #: `SnapshotCompleted` comes first) or started (merged in the background: `SnapshotCompleted` follows)
    snapshot: bool = False
    #: this batch was re-run by recovery from its stored plan
    replayed: bool = False
    #: planned batches still waiting to be re-run after this one
    pending_batches: int = 0
    #: what a restart would read now: state bytes in the newest snapshot plus the deltas after it,
    #: and the longest chain of deltas (batches) after a snapshot
    restart_bytes: int = 0
    restart_deltas: int = 0
    #: Kafka consumer lag per source and "topic:partition" (end offset minus planned position)
    kafka_lag: dict[str, dict[str, int]] = field(default_factory=dict)
    #: per event-time window operator: ``watermark_ms`` (None before any record), ``late_records``
    #: (behind the watermark in this batch) and ``late_records_total`` (so far, as checkpointed)
    event_time: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def scheduling_delay_ms(self) -> int:
        """Wait between the batch time and the start of its processing."""
        return max(0, self.processing_start_ms - self.batch_time_ms)

    @property
    def processing_delay_ms(self) -> int:
        """Time spent planning, running and committing the batch (-1 while it runs)."""
        return -1 if self.processing_end_ms < 0 else self.processing_end_ms - self.processing_start_ms

    @property
    def total_delay_ms(self) -> int:
        """Scheduling plus processing delay (-1 while the batch runs)."""
        return -1 if self.processing_end_ms < 0 else self.scheduling_delay_ms + self.processing_delay_ms


@dataclass
class JobStarted:
    """The job started: fresh, or restored from a commit.

    Attributes:
        batch_time_ms: the first batch time it will run.
        restored: state was restored from a checkpoint commit.
        commit_batch_ms: the batch time of that commit (None when fresh).
        replay_batches: planned-but-uncommitted batches recovery re-runs first.
        catch_up_batches: batch times that fell in the downtime and run next (wall clock
            minus the last batch; 0 for a fresh job).
        mode: "start" (one batch per interval) or "run" (back to back).
        batch_interval_ms: the batch interval.
        checkpoint: the checkpoint URL, if any.
    """

    batch_time_ms: int
    restored: bool
    commit_batch_ms: int | None
    replay_batches: int
    catch_up_batches: int
    mode: str
    batch_interval_ms: int
    checkpoint: str | None = None
    sources: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)


@dataclass
class BatchPlanned:
    """The input of a batch is decided (durable in the checkpoint before anything runs).

    `replay` is True for a plan recovery read back rather than made.
    """

    batch_time_ms: int
    plan_ms: float
    replay: bool = False
    sources: list[str] = field(default_factory=list)


@dataclass
class BatchReplayed:
    """Recovery re-ran the planned-but-uncommitted batch `batch_time_ms`; `remaining` are still to re-run."""

    batch_time_ms: int
    num_records: int
    remaining: int


@dataclass
class SnapshotCompleted:
    """A full state snapshot as of batch `batch_time_ms` is written (merged in the background), or taken in that
    batch (a small state: its file is written with the batch's commit record); `operators`: bytes per operator."""

    batch_time_ms: int
    bytes: int
    write_ms: float
    operators: dict[str, int] = field(default_factory=dict)


@dataclass
class ErrorInfo:
    """The job failed at batch `batch_time_ms` (None: outside a batch); `kind` is the exception's class name."""

    batch_time_ms: int | None
    kind: str
    message: str
    error: BaseException | None = None


@dataclass
class JobStopped:
    """The job stopped; `batch_time_ms` is the last batch it ran (committed, with a checkpoint)."""

    batch_time_ms: int | None
    batches: int
    failed: bool = False


class StreamingListener:
    """Base class of job listeners: override the callbacks you need (each does nothing by default).

    Register with ``ssc.add_listener(listener)``. Callbacks run in the job's thread,
    between batches, so keep them quick; an exception in one is logged and the job goes on.
    Objects that do not subclass this work too: only the methods they define are called.

    Example:
        >>> import streamkeep as sk
        >>> class Progress(sk.StreamingListener):
        ...     def on_batch_completed(self, info: sk.BatchInfo) -> None:
        ...         print(info.batch_time_ms, info.num_records)
        >>> ssc = sk.StreamingContext(1.0, clock=sk.testing.ManualClock())
        >>> ssc.queue_stream([[1, 2]], name="q").foreach_batch(lambda b: None)
        >>> ssc.add_listener(Progress())
        >>> ssc.run()
        1000 2
        1
    """

    def on_job_started(self, event: JobStarted) -> None:
        """The job started (fresh or restored)."""

    def on_batch_planned(self, event: BatchPlanned) -> None:
        """A batch's input was planned."""

    def on_batch_started(self, info: BatchInfo) -> None:
        """A batch's input was read; its operators and outputs run next (``processing_end_ms`` is -1)."""

    def on_batch_completed(self, info: BatchInfo) -> None:
        """A batch ran and committed."""

    def on_batch_replayed(self, event: BatchReplayed) -> None:
        """Recovery re-ran a planned batch."""

    def on_snapshot_completed(self, event: SnapshotCompleted) -> None:
        """A full state snapshot was written."""

    def on_error(self, event: ErrorInfo) -> None:
        """The job failed."""

    def on_job_stopped(self, event: JobStopped) -> None:
        """The job stopped."""


def emit(listeners: list[Any], method: str, event: Any) -> None:
    """Call ``listener.<method>(event)`` on each listener that has it; log (never raise) its exceptions."""
    for li in listeners:
        cb = getattr(li, method, None)
        if cb is None:
            continue
        try:
            cb(event)
        except Exception:
            _listener_log.exception("listener %r raised in %s; the job goes on", li, method, extra=batch_extra(getattr(event, "batch_time_ms", None)))


# ----------------------------------------------------------------------------- measuring


class StateSizer:
    """Encoded state size per operator, re-measured only while that costs < 2% of the time.

    A snapshot gives the exact size for free (`from_snapshot`); in between, re-encoding
    the state costs O(state), so it runs at most once per 50x its last cost.
    """

    BUDGET = 50.0

    def __init__(self) -> None:
        self.sizes: dict[str, tuple[int, int]] = {}  # operator -> (bytes, batch time)
        self._next = 0.0

    def from_snapshot(self, t: int, sizes: dict[str, int]) -> None:
        """Record the exact sizes of a snapshot taken at batch `t`."""
        for name, n in sizes.items():
            self.sizes[name] = (n, t)
        self._next = time.perf_counter() + 1.0

    def measure(self, t: int, names: list[str], size_of: Any) -> None:
        """Re-encode every operator's state if the budget allows (`size_of(name) -> bytes` of its state)."""
        now = time.perf_counter()
        if now < self._next or not names:
            return
        for name in names:
            self.sizes[name] = (size_of(name), t)
        cost = time.perf_counter() - now
        self._next = time.perf_counter() + max(0.05, cost * self.BUDGET)

    def info(self, keys: dict[str, int]) -> dict[str, StateInfo]:
        """`StateInfo` per operator: keys now (`keys`: operator -> key count), bytes as last measured."""
        out = {}
        for name, n in keys.items():
            b = self.sizes.get(name)
            out[name] = StateInfo(n, b[0] if b else None, b[1] if b else None)
        return out


class LagWatch:
    """WARNING when the scheduling delay keeps growing (the job falls behind); INFO once it has caught up."""

    WINDOW = 10
    QUIET_S = 30.0

    def __init__(self, interval_ms: int) -> None:
        self.interval = interval_ms
        self._delays: deque[int] = deque(maxlen=self.WINDOW)
        self._warned_at = -1e18
        self._behind = False

    def observe(self, t: int, delay_ms: int) -> None:
        """Feed one batch's scheduling delay (ms)."""
        d = self._delays
        d.append(delay_ms)
        if delay_ms > 2 * self.interval and len(d) == self.WINDOW and delay_ms > d[0] + self.interval:
            now = time.monotonic()
            if now - self._warned_at >= self.QUIET_S:
                self._warned_at = now
                self._behind = True
                log.warning(
                    "falling behind: batch %s started %.3f s after its time (%.3f s %d batches ago); batches take longer than "
                    "the %.3f s interval. Raise the interval, lower the input rate, or speed up the job.",
                    iso_ms(t),
                    delay_ms / 1000,
                    d[0] / 1000,
                    self.WINDOW - 1,
                    self.interval / 1000,
                    extra=batch_extra(t),
                )
        elif self._behind and delay_ms <= self.interval:
            self._behind = False
            log.info("caught up: batch %s started %.3f s after its time", iso_ms(t), delay_ms / 1000, extra=batch_extra(t))


__all__ = [
    "BatchInfo",
    "BatchPlanned",
    "BatchReplayed",
    "ErrorInfo",
    "JobStarted",
    "JobStopped",
    "LagWatch",
    "SnapshotCompleted",
    "StateInfo",
    "StateSizer",
    "StreamingListener",
    "batch_extra",
    "emit",
    "iso_ms",
]
