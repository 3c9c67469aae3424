"""The `Sink` interface: an output that makes a replayed batch harmless.

A sink is told the batch time with every write. After a crash the scheduler
may call ``write`` again for a batch time the sink already saw (the batch ran
but its commit record was not written). A sink must then leave the external
system as if the batch had been written once: overwrite per batch time, or
record the last applied batch time atomically with the data and skip replays.
Must not import the scheduler, dstream, sources or executors.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from streamkeep._types import BatchTime


@runtime_checkable
class Sink(Protocol):
    """An output of a streaming job, written once per batch time."""

    name: str

    def open(self) -> None:
        """Connect. Called once before the first write."""

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Write the batch's records; may be called again for the same batch time."""

    def close(self) -> None:
        """Flush and release resources; safe to call twice."""
