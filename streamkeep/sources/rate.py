"""`RateSource` (rate_stream): record i is ``(i, timestamp_ms)``, a pure function of i.

The plan for a batch is the offset range ``[start, end)``; reading it again gives
the same records, so the source is replayable. Row i's timestamp is
``t0 + i * 1000 / rows_per_second`` where t0 is the start of the first batch.
"""

from __future__ import annotations

from typing import Any

from streamkeep._types import BatchTime, Data
from streamkeep.errors import ConfigError
from streamkeep.sources.base import BlobStore


class RateSource:
    """`rows_per_second` rows per second of batch time, numbered from `start`."""

    replayable = True

    def __init__(self, rows_per_second: float, *, name: str, start: int = 0, num_partitions: int = 1) -> None:
        if not isinstance(rows_per_second, (int, float)) or rows_per_second <= 0:
            msg = f"rate_stream: rows_per_second must be a positive number, got {rows_per_second!r}"
            raise ConfigError(msg)
        self.name = name
        self.rows_per_second = float(rows_per_second)
        self._start = int(start)
        self._next = int(start)
        self._t0: int | None = None
        self._interval_ms = 1000
        self._parts = num_partitions

    def set_batch_interval_ms(self, ms: int) -> None:
        self._interval_ms = ms

    def open(self, blobs: BlobStore) -> None:
        pass

    def restore(self, position: Data) -> None:
        self._next = int(position["next"])
        self._t0 = int(position["t0"])

    def position(self) -> Data:
        return {"next": self._next, "t0": self._t0}

    def _end_for(self, batch_time: BatchTime) -> int:
        assert self._t0 is not None
        return self._start + int((batch_time - self._t0) * self.rows_per_second // 1000)

    def plan(self, batch_time: BatchTime) -> Data:
        if self._t0 is None:
            self._t0 = batch_time - self._interval_ms
        lo = self._next
        hi = max(lo, self._end_for(batch_time))
        self._next = hi
        return {"from": lo, "until": hi, "t0": self._t0}

    def read(self, plan: Data, batch_time: BatchTime) -> list[list[Any]]:
        lo, hi, t0 = int(plan["from"]), int(plan["until"]), int(plan["t0"])
        step = 1000.0 / self.rows_per_second
        s = self._start
        rows = [(i, t0 + int((i - s) * step)) for i in range(lo, hi)]
        if self._parts == 1:
            return [rows]
        return [rows[i :: self._parts] for i in range(self._parts)]

    def exhausted(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"kind": "rate", "rows_per_second": self.rows_per_second, "start": self._start}
