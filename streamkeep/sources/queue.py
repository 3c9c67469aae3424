"""In-memory sources: `QueueSource` (queue_stream) and `ConstantSource` (constant_stream).

A queue cannot be re-read after a crash. With a checkpoint, `QueueSource`
materialises each planned batch into the checkpoint (a blob named by the plan),
so replays read exactly what was planned; its records must then be storable by
the msgpack codec. Its position (how many items were taken) is restored too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streamkeep._types import BatchTime, Data
from streamkeep.sources.base import BlobStore


class QueueSource:
    """Each item of `batches` is the records of one batch.

    Args:
        batches: an iterable of iterables of records (read lazily, one item per batch).
        name: the source's name in the checkpoint.
        one_at_a_time: one item per batch (True) or everything in the first batch.
        default: records for batches after the queue ran out (None: empty batches).
        num_partitions: split each batch round-robin into this many partitions.
        partitioned: each item of `batches` (and `default`) is a list of partitions,
            each a list of records, and a batch keeps exactly those partitions (as
            Spark's queueStream keeps the queued RDDs' partitioning); with
            ``one_at_a_time=False`` the first batch has every item's partitions in turn.
    """

    replayable = False
    can_materialise = True

    def __init__(
        self,
        batches: Iterable[Iterable[Any]],
        *,
        name: str,
        one_at_a_time: bool = True,
        default: Iterable[Any] | None = None,
        num_partitions: int = 1,
        partitioned: bool = False,
    ) -> None:
        self.name = name
        self._partitioned = partitioned
        self._items: list[list[Any]] = [self._item(b) for b in batches]
        self._one = one_at_a_time
        self._default = None if default is None else self._item(default)
        self._taken = 0
        self._parts = num_partitions
        self._blobs: BlobStore | None = None

    def _item(self, records: Iterable[Any]) -> list[Any]:
        return [list(p) for p in records] if self._partitioned else list(records)

    def open(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def restore(self, position: Data) -> None:
        self._taken = int(position["taken"])

    def position(self) -> Data:
        return {"taken": self._taken}

    def plan(self, batch_time: BatchTime) -> Data:
        if self._taken < len(self._items):
            if self._one:
                records = self._items[self._taken]
                self._taken += 1
            else:
                records = [r for item in self._items[self._taken :] for r in item]
                self._taken = len(self._items)
        elif self._default is not None:
            records = self._default
        else:
            return {"n": 0}
        if not records:
            return {"n": 0}
        assert self._blobs is not None
        key = f"{self.name}/{batch_time}"
        self._blobs.put(key, records)
        if self._partitioned:  # n counts partitions: a batch of empty partitions keeps them
            return {"n": len(records), "blobs": [key], "partitioned": True}
        return {"n": len(records), "blobs": [key]}

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        if not plan.get("n"):
            return [[] for _ in range(self._parts)]
        assert self._blobs is not None
        records = list(self._blobs.get(plan["blobs"][0]))
        if not self._blobs.durable:
            self._blobs.delete(plan["blobs"][0])
        if plan.get("partitioned"):
            return [list(p) for p in records]
        if self._parts == 1:
            return [records]
        return [records[i :: self._parts] for i in range(self._parts)]

    def exhausted(self) -> bool:
        return self._taken >= len(self._items) and self._default is None

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Data]:
        return {"kind": "queue"}


class ConstantSource:
    """The same records in every batch (replayable: the plan is empty)."""

    replayable = True

    def __init__(self, records: Iterable[Any], *, name: str, num_partitions: int = 1) -> None:
        self.name = name
        self._records = list(records)
        self._parts = num_partitions

    def open(self, blobs: BlobStore) -> None:
        pass

    def restore(self, position: Data) -> None:
        pass

    def position(self) -> Data:
        return {}

    def plan(self, batch_time: BatchTime) -> Data:
        return {}

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        r = self._records
        return [list(r)] if self._parts == 1 else [r[i :: self._parts] for i in range(self._parts)]

    def exhausted(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Data]:
        return {"kind": "constant"}
