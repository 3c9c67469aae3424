"""`Executor`: the one seam between the scheduler and whoever runs the job graph.

The scheduler plans, runs and commits; an executor computes. The scheduler
talks to it only through the methods below, so a new executor (in-process,
worker processes, a cluster) is added without touching the scheduler: pass an
instance as ``StreamingContext(..., executor=MyExecutor())``.

Lifecycle, as the scheduler drives it:

1. ``open(graph, zero_ms)``: build the stateful operators of the graph's needed
   nodes, with empty state. Calling it again starts over (recovery may try an
   older commit after a newer one failed to load).
2. For each stateful operator (``operators()``): either ``seed(name)`` (a fresh
   start: the operator's initial state) or ``restore(name, snapshot, deltas)``
   (the checkpoint's snapshot, or None, plus the deltas after it, in order).
3. Per batch: ``compute(t, inputs)`` then ``run_outputs(t, results)``; then,
   with a checkpoint, ``delta(name)`` per operator (what changed since the last
   call, None when nothing did) and now and then ``snapshot(name)`` (the whole
   state: a consistent copy the scheduler may encode in another thread); without
   one, ``forget_changes()`` keeps change tracking bounded.
4. ``drained(last_t)`` tells whether windows still hold input; ``close()``
   releases what the executor holds (worker processes, connections).

Deltas and snapshots are plain data (``{"set": [(key, value), ...], "del":
[key, ...]}`` for keyed state, window slices for windows); the scheduler encodes
them with the operator's codec. For metrics the scheduler asks
``key_count(name)`` and, when listeners want them, per-operator timings
(``measure_timings()`` before a batch, ``timings()`` after it). An executor that
also implements `EventTimeReporting` reports event-time watermarks and late
records per operator (metrics).

Losing workers: ``compute``, ``run_outputs``, ``delta`` and ``snapshot`` may raise
`streamkeep.errors.WorkerLostError` when a worker holding state died. The
scheduler then calls ``open`` again and restores every operator from the last
commit (the executor replaces the dead workers in ``open``), and runs the batch
again from its plan. An executor that holds all state in the driver never raises it.

An executor that runs work in other processes may implement `RemoteInput`: the
scheduler then lets it read a source's planned input (``read_input``) where it
computes, instead of calling the source's ``read`` in the driver.

An executor that splits keyed state into partitions also implements
`KeyPartitioned`; the scheduler records its ``partitioning()`` in each commit
record (for ``checkpoint inspect``; restoring never needs it: every chain entry
says how many partitions wrote it, so a checkpoint restores on any partition count).

An executor whose workers write the state files of some operators themselves (the
partition owners of a cluster) also implements `StateOwners`: the scheduler hands it
the checkpoint once (``attach_checkpoint``, before ``open``, which then checks that
every worker sees the storage), and for its ``owned()`` operators asks it, instead of
``delta``/``snapshot``, to have the files written and acknowledged (``write_deltas``,
``write_snapshots``, ``compact``). The files are named for the batch, the partition
and the claim epoch; the commit record the scheduler writes after every
acknowledgement is what makes them part of the checkpoint.

An executor whose workers would otherwise wait for the driver between batches may
implement `SendsAhead`: when the loop runs batches back to back, the scheduler plans
and reads the next batch (plan durable first) while the workers compute this one, and
the executor queues that batch's stateless work behind this one's (``send_ahead``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from streamkeep.batch import Batch
from streamkeep.dstream._graph import Graph


@runtime_checkable
class Executor(Protocol):
    """What the scheduler needs from whoever runs the job graph (see the module docstring)."""

    def open(self, graph: Graph, zero_ms: int) -> None:
        """Build the stateful operators of `graph` with empty state (again, when called again)."""
        ...

    def operators(self) -> list[str]:
        """Names of the stateful operators, in graph order."""
        ...

    def seed(self, name: str) -> None:
        """Give operator `name` its initial state (a fresh start)."""
        ...

    def restore(self, name: str, snapshot: dict[str, Any] | None, deltas: list[dict[str, Any]]) -> None:
        """Replace operator `name`'s state with `snapshot` (None: empty) plus `deltas` applied in order."""
        ...

    def compute(self, t: int, inputs: dict[str, Batch[Any]]) -> dict[int, Batch[Any] | None]:
        """Compute every needed node for batch time `t` from the sources' batches (by source name)."""
        ...

    def run_outputs(self, t: int, results: dict[int, Batch[Any] | None]) -> None:
        """Run the outputs for batch time `t` in registration order."""
        ...

    def delta(self, name: str) -> dict[str, Any] | None:
        """What changed in operator `name` since the last call, as data; None when nothing did."""
        ...

    def snapshot(self, name: str) -> dict[str, Any]:
        """The whole state of operator `name` as data (a copy, safe to encode in another thread)."""
        ...

    def forget_changes(self) -> None:
        """Drop every operator's change tracking (no checkpoint to write)."""
        ...

    def key_count(self, name: str) -> int:
        """Keys (or records) operator `name` holds."""
        ...

    def measure_timings(self) -> None:
        """Measure ms per stateful operator and per output during the next batch."""
        ...

    def timings(self) -> dict[str, float]:
        """What `measure_timings` measured during the last batch (empty when not asked)."""
        ...

    def drained(self, last_t: int) -> bool:
        """True when no operator still holds input waiting for a later batch (windows) after `last_t`."""
        ...

    def close(self) -> None:
        """Release worker processes and connections."""
        ...


@runtime_checkable
class EventTimeReporting(Protocol):
    """An executor that reports its event-time window operators after each batch (optional capability)."""

    def event_time(self) -> dict[str, dict[str, Any]]:
        """Per event-time window operator: ``watermark_ms``, ``late_records`` (this batch), ``late_records_total``."""
        ...


@runtime_checkable
class KeyPartitioned(Protocol):
    """A declared capability: the executor splits keyed state into key partitions."""

    def partitioning(self) -> dict[str, Any]:
        """How keys are split, as plain data (e.g. ``{"executor": "ray", "partitions": 4, "hash": ...}``)."""
        ...


@runtime_checkable
class StateOwners(Protocol):
    """A declared capability: the executor's workers write the state files of its ``owned()`` operators.

    Per operator, an entry lists one item per key partition, in partition order: the
    partition's file (a path relative to the checkpoint root), a small payload inline
    (``{"codec": name, "data": bytes}``, deltas only) or None (nothing to write).
    """

    def attach_checkpoint(self, url: str | None, storage_options: dict[str, Any] | None) -> None:
        """Write state files under checkpoint `url` (None: none); ``open`` checks every worker can read and write it."""
        ...

    def owned(self) -> list[str]:
        """Names of the operators whose state files the workers write (in graph order)."""
        ...

    def restore_files(self, name: str, codec: str, chain: dict[str, Any]) -> None:
        """Have the workers load owned operator `name`'s state from a commit's stored `chain`, each its own keys.

        Like ``restore``, but the workers read the files (any partition count, or whole files)
        themselves. Raises what reading raises (`CorruptCheckpointError` for a damaged file).
        """
        ...

    def write_deltas(self, t: int, epoch: int, inline_max: dict[str, int]) -> dict[str, tuple[list[Any], int, bool]]:
        """Have each owned operator's changes of batch `t` written for claim `epoch`.

        `inline_max` is per operator the bytes its whole delta may have inline. Returns, per
        operator that changed: (entry per partition, payload bytes, whether `merge` applies).
        """
        ...

    def write_snapshots(self, t: int, epoch: int, names: list[str]) -> dict[str, tuple[list[str | None], int]]:
        """Have a copy of the live state of `names` written as their snapshots of batch `t` (called between batches)."""
        ...

    def compact(self, t: int, epoch: int, jobs: list[tuple[str, str, dict[str, Any]]]) -> dict[str, tuple[list[str | None], int]]:
        """Have each job's stored chain (operator, codec, chain) merged per partition into a snapshot of batch `t`.

        Reads storage only (may run in another thread while batches run). An operator whose
        chain cannot be merged is left out.
        """
        ...


@runtime_checkable
class RemoteInput(Protocol):
    """A declared capability: the executor reads planned input in its workers (sources that are `RemotelyReadable`)."""

    def read_input(self, source: Any, plan: Any, batch_time: int) -> tuple[Any, list[int]] | None:
        """`source`'s input for `plan` as a value ``compute`` accepts in ``inputs``, and its records per partition.

        None: the scheduler reads the input itself (``source.read``). Raises what the
        source's read raises (e.g. `streamkeep.errors.SourceError`).
        """
        ...


@runtime_checkable
class SendsAhead(Protocol):
    """A declared capability: the executor can start the next batch's work while its workers compute this one.

    The scheduler then makes and reads the next batch (its plan durable first) while the
    workers compute batch `t`, and hands its input over with ``send_ahead``: the workers find
    it queued when they finish. A batch sent ahead changes no state before its predecessor's
    outputs and commit (only its stateless per-record side runs early).
    """

    def compute_with(self, t: int, inputs: dict[str, Any], ahead: Callable[[], None]) -> dict[int, Any]:
        """``compute``, calling `ahead` once while the workers compute batch `t` (or not at all)."""
        ...

    def send_ahead(self, t: int, inputs: dict[str, Any]) -> None:
        """Start the stateless side of batch `t` (the next ``compute`` takes it up; a failed try drops it)."""
        ...
