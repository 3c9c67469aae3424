"""The `Source` interface: how an input plans, reads and replays a batch.

A source never hands records to the engine directly. For each batch time it
first returns a *plan* (plain data: an offset range, a file list, a WAL segment
id), which the scheduler makes durable, then reads exactly the planned input.
Reading the same plan again must give the same records: that is what makes
recovery exact. Must not import the scheduler, dstream, sinks or executors.

Optional capabilities: a source that has one implements the matching small
protocol below (`Materialisable`, `BatchIntervalAware`, `Backpressured`,
`OffsetCommitting`, `PartitionLabelled`, `RemotelyReadable`); the scheduler (or, for
`RemotelyReadable`, an executor that runs work in other processes) checks
``isinstance(source, Protocol)`` and calls it. Nothing else is probed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from streamkeep._types import BatchTime, Data


class BlobStore(Protocol):
    """Durable blobs for sources whose input cannot be re-read (socket WAL, queues).

    Backed by the checkpoint when one is set, else by memory.
    """

    durable: bool

    def put(self, name: str, data: Data) -> None:
        """Store `data` under `name` (written whole; never overwritten with other data)."""

    def get(self, name: str) -> Data:
        """Return the data stored under `name`."""

    def delete(self, name: str) -> None:
        """Forget `name` (called once no commit needs it)."""


def start_blob(source_name: str) -> str:
    """Name of the blob in which a source records where it started (e.g. the files present at start).

    A source that decides at ``open()`` what it will skip writes that decision here
    (``BlobStore.put``) so a restart before its first durable plan decides the same.
    The scheduler keeps the blob while no commit or pending plan holds a position
    for the source, and deletes it at a restart after that.
    """
    return f"{source_name}/start"


@runtime_checkable
class Source(Protocol):
    """An input of a streaming job.

    Lifecycle: ``open(blobs)`` once; optionally ``restore(position)`` from a
    checkpoint; then per batch time ``plan(t)`` followed by ``read(plan, t)``.
    ``position()`` is the data needed to continue after the last plan.
    """

    name: str
    #: True when read(plan) gives the same records every time for the same plan.
    replayable: bool

    def open(self, blobs: BlobStore) -> None:
        """Connect (threads, sockets, clients). Called once before planning."""

    def restore(self, position: Data) -> None:
        """Continue after `position` (as returned by `position()` in an earlier run)."""

    def position(self) -> Data:
        """Data that lets a new process continue right after the last plan."""

    def plan(self, batch_time: BatchTime) -> Data:
        """Decide the input for `batch_time` as data, and advance the position past it."""

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        """Return the planned records, one list per partition."""

    def exhausted(self) -> bool:
        """True when a finite source has planned all its input (``run()`` stops then)."""

    def close(self) -> None:
        """Release resources; safe to call twice."""

    def describe(self) -> dict[str, Data]:
        """Plain data describing the source's kind and shape (stored in the checkpoint)."""


@runtime_checkable
class Materialisable(Protocol):
    """A source that is not replayable but writes its input into blobs when it plans (socket WAL, queues).

    With ``can_materialise = True`` the source may run with a checkpoint: each plan
    names the blobs (``plan["blobs"]``) holding exactly the input read back on replay.
    """

    can_materialise: bool


@runtime_checkable
class BatchIntervalAware(Protocol):
    """A source that needs the job's batch interval (rate limits, records per batch)."""

    def set_batch_interval_ms(self, interval_ms: int) -> None:
        """Called once, before ``open()``, with the batch interval in ms."""


@runtime_checkable
class Backpressured(Protocol):
    """A source that sizes its next plans from how the last batches went (backpressure)."""

    def observe(self, batch_time: BatchTime, processing_ms: float, records: int, *, scheduling_delay_ms: float = 0.0) -> None:
        """Called after every committed batch: its processing time, this source's records, its scheduling delay."""


@runtime_checkable
class OffsetCommitting(Protocol):
    """A source that reports its progress to an external system (e.g. Kafka consumer-group offsets).

    Informational only: the checkpoint holds the truth. The scheduler calls it after a
    batch's commit (not while replaying planned batches) with the position of that
    batch's plan; an exception is logged, not raised.
    """

    def commit_offsets(self, position: Data) -> None:
        """Report `position` (as from ``position()``) to the external system."""


@runtime_checkable
class DeadLettering(Protocol):
    """A source that writes the records it cannot decode to a dead-letter sink of its own.

    That sink is a sink of the job: its name is checked against the job's other sinks, and the
    scheduler hands it the driver's fencing token like every other `FencedSink`.
    """

    @property
    def dead_letter_sink(self) -> Any | None:
        """The dead-letter sink (None when the source fails or calls a function instead)."""


class DeadLetters:
    """A source's ``on_error``: a dead-letter sink (opened once, written per batch) or a callable.

    Shared by the text-file and Kafka sources, so both open, write and close it the same way.
    """

    def __init__(self, on_error: Any) -> None:
        self.on_error = on_error
        self._opened = False

    @property
    def sink(self) -> Any | None:
        """The dead-letter sink, or None (no ``on_error``, or a callable)."""
        return None if self.on_error is None or callable(self.on_error) else self.on_error

    def open(self) -> None:
        """Open the sink (once)."""
        sink = self.sink
        if sink is not None and not self._opened:
            sink.open()
            self._opened = True

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Write a batch's dead letters to the sink (nothing when there are none)."""
        if records:
            sink = self.sink
            assert sink is not None, "dead letters without a dead-letter sink"
            self.open()
            sink.write(batch_time, records)

    def close(self) -> None:
        """Close the sink if it was opened; safe to call twice."""
        sink = self.sink
        if self._opened and sink is not None:
            self._opened = False
            sink.close()


@runtime_checkable
class PartitionLabelled(Protocol):
    """A source whose batch partitions are partitions of the input itself (Kafka's topic partitions).

    Event-time windows keep a watermark per source partition; a source without this
    capability (queue, files, socket, rate) is one partition: every partition of its
    batches has the source's name.
    """

    def partition_labels(self, plan: Data, batch_time: BatchTime) -> list[str]:
        """The label of each partition ``read(plan, batch_time)`` returns, in order (stable across batches)."""
        ...


def source_partitions(source: Source, plan: Data | None, count: int, batch_time: BatchTime) -> tuple[str, ...]:
    """The source partition of each of the `count` partitions `source` read for a plan: ``"name/label"``, or ``"name"``.

    The scheduler puts them on the source's batch (``Batch.source_partitions``).
    """
    if plan is not None and isinstance(source, PartitionLabelled):
        labels = source.partition_labels(plan, batch_time)
        if len(labels) == count:
            return tuple(f"{source.name}/{label}" for label in labels)
    return (source.name,) * count


#: One fetch of a `RemoteRead`: run in any process, returns its partitions (in order) and data for ``finish``.
RemoteFetch = Callable[[], tuple[list[list[Any]], Any]]


@dataclass(frozen=True)
class RemoteRead:
    """A planned read cut into fetches that run where the records are wanted (e.g. Ray workers).

    Attributes:
        fetches: picklable callables; fetch ``i`` returns ``(partitions, extra)``. The
            partitions of every fetch, one after another in order, are exactly what
            ``read(plan, batch_time)`` returns. A fetch raises what ``read`` would
            (e.g. `SourceError`).
        finish: called in the driver, once every fetch succeeded, with each fetch's
            ``extra`` in order (e.g. to write the batch's dead letters to the source's
            dead-letter sink, or call its ``on_error`` callable, as ``read`` does).
    """

    fetches: tuple[RemoteFetch, ...]
    finish: Callable[[list[Any]], None]


@runtime_checkable
class RemotelyReadable(Protocol):
    """A source whose planned input can be fetched in other processes (Kafka offset ranges).

    The driver still plans (and the plan is durable as always); an executor that runs
    work elsewhere (`RayExecutor`) asks for a `RemoteRead` and runs its fetches in its
    workers, so the records go from the external system to the workers, never through
    the driver. Executors that compute in the driver ignore this capability and call
    ``read``. A replay of the same plan fetches the same records either way.
    """

    def remote_read(self, plan: Data, batch_time: BatchTime, tasks: int) -> RemoteRead | None:
        """The fetches (at most `tasks`) reading `plan`, or None when ``read`` should be called instead."""
        ...
