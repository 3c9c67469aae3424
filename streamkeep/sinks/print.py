"""`PrintSink`: prints each batch (debugging)."""

from __future__ import annotations

from typing import Any

from streamkeep._types import BatchTime


class PrintSink:
    """Print up to `num` records per batch with the batch time."""

    def __init__(self, *, name: str = "print", num: int = 10) -> None:
        self.name = name
        self.num = num

    def open(self) -> None:
        pass

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        print(f"--- batch {batch_time} ms: {len(records)} records")
        for r in records[: self.num]:
            print(r)

    def close(self) -> None:
        pass
