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
record (for ``checkpoint inspect``; restoring never needs it: deltas and snapshots
hold every partition's keys merged, so a checkpoint restores on any partition count).
"""

from __future__ import annotations

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
class RemoteInput(Protocol):
    """A declared capability: the executor reads planned input in its workers (sources that are `RemotelyReadable`)."""

    def read_input(self, source: Any, plan: Any, batch_time: int) -> tuple[Any, list[int]] | None:
        """`source`'s input for `plan` as a value ``compute`` accepts in ``inputs``, and its records per partition.

        None: the scheduler reads the input itself (``source.read``). Raises what the
        source's read raises (e.g. `streamkeep.errors.SourceError`).
        """
        ...
