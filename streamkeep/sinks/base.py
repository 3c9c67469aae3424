"""The `Sink` interface: an output that makes a replayed batch harmless, and fencing.

A sink is told the batch time with every write. After a crash the scheduler
may call ``write`` again for a batch time the sink already saw (the batch ran
but its commit record was not written). A sink must then leave the external
system as if the batch had been written once: overwrite per batch time, or
record the last applied batch time atomically with the data and skip replays.

`FencedSink` is the optional capability of a sink that also refuses writes
from a driver that lost the checkpoint to a newer one (a "zombie"); the
scheduler hands such a sink a `FencingToken` once it owns the checkpoint.
`MarkedSink` is the optional capability of a sink that records the last batch
time it applied; a fresh job starts after it. `BatchSink` is the optional
capability of a sink that reads the batch itself (only its first records, or one
list per partition) instead of getting all its records as one list. `PartitionWritable` is
the optional capability of a sink whose batch can be written in parts, each by the
process that holds the part's records, then published once by the driver. `SettlingSink` is the
optional capability of a sink whose ``write`` may return before the external system confirmed the
batch, the scheduler settling it before the batch's commit. The scheduler
and executors check these with ``isinstance(sink, Protocol)``; nothing else is probed.
Must not import the scheduler, dstream, sources or executors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from streamkeep._arrow import is_table
from streamkeep._types import BatchTime

__all__ = [
    "BatchSink",
    "BatchView",
    "FencedSink",
    "FencingToken",
    "MarkedSink",
    "PartitionWritable",
    "SettlingSink",
    "Sink",
    "TableSink",
    "sink_records",
]


@runtime_checkable
class Sink(Protocol):
    """An output of a streaming job, written once per batch time.

    What the engine guarantees: ``write(T, records)`` is called only by the driver
    that owns the checkpoint, after it proved so (a driver paused past its lease
    that was taken over stops before writing). It may be called again for ``T``
    after a crash, with the same records. What the engine cannot guarantee: that
    the driver does not pause *inside* ``write`` (or just before it) long enough
    for another driver to take over and write ``T`` or later batches meanwhile.

    What a sink must do:

    * **Replays.** Make a repeated ``T`` harmless: overwrite per batch time, or
      keep a marker (the last applied ``T``) updated atomically with the data and
      skip ``T`` not after it.
    * **Zombies** (to be exactly once even when a driver is paused mid-write):
      implement `FencedSink`. Keep the highest `FencingToken.epoch` seen for the
      token's ``checkpoint_id`` next to the data (e.g. in the marker), and in the
      same atomic step as the write refuse it when the stored epoch is higher
      than the token's (raise `streamkeep.errors.CheckpointInUseError`), else
      store the token's epoch. Epochs of different ``checkpoint_id`` values are not
      comparable (a new checkpoint starts again at 1): treat them as unrelated.
      Before (re)acquiring an exclusive resource that would cut off the current
      owner (e.g. a Kafka ``init_transactions``), call ``token.check()``.
    """

    name: str

    def open(self) -> None:
        """Connect. Called once before the first write."""

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Write the batch's records; may be called again for the same batch time."""

    def close(self) -> None:
        """Flush and release resources; safe to call twice."""


class FencingToken:
    """Proof of ownership that a driver hands its sinks (see `FencedSink`).

    Attributes:
        checkpoint_id: identifies the checkpoint (one instance: a deleted and
            recreated checkpoint gets a new id).
        epoch: the driver's claim epoch; a driver that took the checkpoint over
            has a higher one. A write with a lower epoch than one already seen for
            the same ``checkpoint_id`` comes from a fenced-out driver.
        check: ``check()`` raises `CheckpointInUseError` when this driver no longer
            owns the checkpoint (cheap while the driver's lease is fresh; a storage
            round trip otherwise). Not kept when a sink is pickled.

    Example:
        >>> token = FencingToken("3f2a", 4)
        >>> token.epoch, token.checkpoint_id
        (4, '3f2a')
        >>> token.check()  # no check given: nothing to do
    """

    __slots__ = ("_check", "checkpoint_id", "epoch")

    def __init__(self, checkpoint_id: str, epoch: int, check: Callable[[], None] | None = None) -> None:
        self.checkpoint_id = checkpoint_id
        self.epoch = epoch
        self._check = check

    def check(self) -> None:
        """Raise `CheckpointInUseError` if the driver lost the checkpoint."""
        if self._check is not None:
            self._check()

    def __getstate__(self) -> tuple[str, int]:
        return self.checkpoint_id, self.epoch

    def __setstate__(self, state: tuple[str, int]) -> None:
        self.checkpoint_id, self.epoch = state
        self._check = None

    def __repr__(self) -> str:
        return f"FencingToken(checkpoint_id={self.checkpoint_id!r}, epoch={self.epoch})"


@runtime_checkable
class FencedSink(Protocol):
    """A sink that refuses writes from a driver fenced out by a newer owner.

    The scheduler calls ``set_fencing_token`` once, after claiming the
    checkpoint and before ``open()`` or any other call; jobs without a
    checkpoint never call it (the sink then writes unfenced, as before).
    `RedisSink`, `KafkaSink` and `FileSink` implement it.
    """

    def set_fencing_token(self, token: FencingToken) -> None:
        """Remember the token; compare it with the stored epoch at every write."""


@runtime_checkable
class MarkedSink(Protocol):
    """A sink that keeps a marker: the last batch time it applied (and skips batch times not after it).

    A fresh job (no checkpoint, or a new one) whose first batch times would not be
    after the marker starts after it instead, so the sink does not skip them.
    `RedisSink` and `KafkaSink` implement it.
    """

    def last_batch(self) -> BatchTime | None:
        """The last batch time applied, or None when the sink has applied none."""


@runtime_checkable
class SettlingSink(Protocol):
    """A sink whose ``write`` may return once the batch is sent, before the external system confirmed it.

    The scheduler of a job with a checkpoint calls ``defer_replies()`` once, after
    ``open()``; from then on ``write(T, ...)`` may return with batch ``T`` sent but its
    outcome unknown, so the next batch is computed while the external system applies
    ``T``. The scheduler calls ``settle(T)`` before it commits ``T`` (in the committer
    thread): it waits for ``T``'s outcome and raises its error, so a batch that failed
    is never committed. A sink must settle ``T`` itself before it sends anything of a
    later batch (and raise ``T``'s error instead of sending it): a later batch never
    applies past a failed earlier one. ``close()`` ends the deferral (a batch it drops
    unsettled was not committed: it is replayed). Jobs without a checkpoint never call
    ``defer_replies`` (the sink then writes synchronously). `RedisSink` implements it.
    """

    def defer_replies(self) -> None:
        """From now on ``write`` may return before its batch is confirmed; ``settle`` confirms it."""

    def settle(self, batch_time: BatchTime) -> None:
        """Wait until every batch written up to `batch_time` is confirmed; raise the first one's failure."""


class BatchView(Protocol):
    """What a `BatchSink` is handed: one batch, read as the sink needs (a `streamkeep.batch.Batch`)."""

    @property
    def partitions(self) -> list[list[Any]]:
        """The records, one list per partition (computes the whole batch)."""

    def take(self, n: int) -> list[Any]:
        """The first `n` records (computes only as many partitions as needed)."""

    def collect(self) -> list[Any]:
        """All records in partition order."""


@runtime_checkable
class BatchSink(Protocol):
    """A sink that reads the batch itself instead of getting all its records as one list.

    The executor calls ``write_batch(T, batch)`` instead of ``write(T, records)``; the
    rules of `Sink` (replays of ``T``, fencing) are the same. `PPrintSink` reads only the
    first records; `TextFilesSink` writes one file per partition.
    """

    def write_batch(self, batch_time: BatchTime, batch: BatchView) -> None:
        """Write batch `batch_time`; may be called again for the same batch time."""


@runtime_checkable
class TableSink(Protocol):
    """A sink that takes a table stream's ``pyarrow.Table`` records as they are (e.g. `ParquetSink`).

    The engine calls ``write(T, tables)`` of such a sink with the batch's tables; every
    other sink receives a table stream's rows as dicts (column -> value), so RedisSink,
    KafkaSink and FileSink(format="jsonl") write tables without conversion code.
    """

    def takes_tables(self) -> bool:
        """True: `write` receives the tables themselves."""


@runtime_checkable
class PartitionWritable(Protocol):
    """A sink whose batch is written in parts where the records are, then published once (Ray executor).

    An executor whose records live in other processes (`RayExecutor`) writes batch ``T``
    in two phases instead of calling ``write``:

    1. ``write_part(T, attempt, i, records)`` for each part ``i = 0..n-1``, each in a
       worker process, on a copy of the sink (pickled: no connections, no fencing check;
       it opens what it needs). It must have no effect a reader sees (a temporary file,
       staged commands) and return a small, picklable receipt.
    2. ``publish(T, attempt, receipts)`` in the driver once every part succeeded (the
       receipts in part order): makes the batch visible atomically and exactly once, with
       the same replay and fencing rules as ``write``.

    ``attempt`` is new for every try of a batch: parts of a try that crashed are never
    published (a publish may clean them up). A replay of ``T`` may cut the records into
    another number of parts; published results must not depend on where the cut is
    (beyond record order, which differs between executors anyway).
    ``partition_writable()`` says whether this instance can (e.g. a `FileSink` on an
    object store cannot concatenate parts cheaply: False, it is written by the driver).
    """

    def partition_writable(self) -> bool:
        """True when ``write_part``/``publish`` may be used instead of ``write``."""
        ...

    def write_part(self, batch_time: BatchTime, attempt: str, index: int, records: list[Any]) -> Any:
        """Stage part `index` of batch `batch_time` (in a worker); return a small receipt for ``publish``."""
        ...

    def publish(self, batch_time: BatchTime, attempt: str, receipts: list[Any]) -> None:
        """Make the staged parts of `attempt` the batch's output, atomically and once (in the driver)."""
        ...


def sink_records(sink: Any, records: list[Any]) -> list[Any]:
    """What `sink.write` receives for a batch's `records`: a table stream's rows as dicts unless `sink` is a TableSink."""
    if not records or not is_table(records[0]) or isinstance(sink, TableSink):
        return records
    return [row for r in records for row in (r.to_pylist() if is_table(r) else (r,))]
