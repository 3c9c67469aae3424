"""`TextFilesSink` and `PPrintSink`: the sinks behind ``save_as_text_files`` and ``pprint``.

Both read the batch themselves (`BatchSink`): `TextFilesSink` writes one file per
partition, `PPrintSink` computes only the records it prints. Must not import the
scheduler, dstream, sources or executors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from streamkeep._types import BatchTime
from streamkeep._util import atomic_write_file, fsync_dir, to_datetime
from streamkeep.errors import ConfigError
from streamkeep.sinks._textfiles import batch_dir, write_text_batch
from streamkeep.sinks.base import BatchView

__all__ = ["PPrintSink", "TextFilesSink"]


def _utc_time(batch_time: BatchTime) -> str:
    return f"{to_datetime(batch_time):%Y-%m-%d %H:%M:%S.%f}"[:-3]


class TextFilesSink:
    """Each batch as text files: ``prefix-<batch time ms>[.suffix]/part-NNNNN`` (one per partition), then ``_SUCCESS``.

    Exactly once: each file is written to a temp name, fsynced and renamed, and
    ``_SUCCESS`` last, so a replayed batch time rewrites identical files (readers
    see a batch once its ``_SUCCESS`` exists). Local paths only. On the Ray executor
    (`PartitionWritable`) each worker writes its part under a hidden name and the driver
    renames the parts into place, removes parts of an earlier try, then writes ``_SUCCESS``.

    Args:
        prefix: path prefix of the batch directories.
        suffix: extension of the batch directories (``prefix-<ms>.suffix``), or None.
        name: the sink's name (unique within a job).

    Example:
        >>> import streamkeep as sk, tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "out")
        >>> ssc = sk.StreamingContext(1.0)
        >>> ssc.queue_stream([["a", "b"]], name="q").write_to(TextFilesSink(out, "txt", name="text"))
        >>> ssc.run()
        1
        >>> sorted(os.listdir(out + "-1000.txt"))  # doctest: +SKIP
        ['_SUCCESS', 'part-00000']
    """

    def __init__(self, prefix: str, suffix: str | None = None, *, name: str = "text_files") -> None:
        if not isinstance(prefix, str) or not prefix:
            msg = f"TextFilesSink: prefix must be a non-empty path prefix, got {prefix!r}"
            raise ConfigError(msg)
        self.prefix = prefix
        self.suffix = suffix
        self.name = name

    def open(self) -> None:
        """Nothing to connect."""

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Write `records` as one partition (the executor calls `write_batch`, which keeps partitions)."""
        write_text_batch(self.prefix, self.suffix, batch_time, [records])

    def write_batch(self, batch_time: BatchTime, batch: BatchView) -> None:
        """Write one file per partition of `batch`."""
        write_text_batch(self.prefix, self.suffix, batch_time, batch.partitions)

    def partition_writable(self) -> bool:
        """True: on Ray each part's file is written by the worker holding its records (`PartitionWritable`)."""
        return True

    def write_part(self, batch_time: BatchTime, attempt: str, index: int, records: list[Any]) -> None:
        """Write part `index` under a hidden name in the batch's directory (a worker)."""
        directory = batch_dir(self.prefix, self.suffix, batch_time)
        os.makedirs(directory, exist_ok=True)
        atomic_write_file(os.path.join(directory, f".{attempt}.part-{index:05d}"), "".join(f"{r}\n" for r in records).encode("utf-8"))

    def publish(self, batch_time: BatchTime, attempt: str, receipts: list[Any]) -> None:
        """Rename the parts of `attempt` to ``part-NNNNN`` (removing other parts), then write ``_SUCCESS``."""
        directory = batch_dir(self.prefix, self.suffix, batch_time)
        os.makedirs(directory, exist_ok=True)
        names = [f"part-{i:05d}" for i in range(len(receipts))]
        for i, name in enumerate(names):
            os.replace(os.path.join(directory, f".{attempt}.part-{i:05d}"), os.path.join(directory, name))
        for name in os.listdir(directory):  # parts of an earlier try of this batch that had more parts
            if (name.startswith("part-") and name not in names) or (name.startswith(".") and ".part-" in name):
                os.unlink(os.path.join(directory, name))
        fsync_dir(directory)
        atomic_write_file(os.path.join(directory, "_SUCCESS"), b"")

    def close(self) -> None:
        """Nothing to release."""


class PPrintSink:
    """Print the first `num` records of every batch under a ``Time: ...`` header, Spark style.

    Computes only the records it prints (and one more, to print ``...`` when there are more).

    Args:
        num: how many records to print per batch.
        name: the sink's name (unique within a job).
        time_format: the header's time for a batch time in ms (default: UTC, milliseconds).

    Example:
        >>> import streamkeep as sk
        >>> ssc = sk.StreamingContext(1.0)
        >>> ssc.queue_stream([["a"]], name="q").write_to(PPrintSink(5, name="show"))
        >>> _ = ssc.run()  # doctest: +NORMALIZE_WHITESPACE
        -------------------------------------------
        Time: 1970-01-01 00:00:01.000
        -------------------------------------------
        a
        <BLANKLINE>
    """

    def __init__(self, num: int = 10, *, name: str = "pprint", time_format: Callable[[BatchTime], str] = _utc_time) -> None:
        if not isinstance(num, int) or num < 0:
            msg = f"pprint: num must be a non-negative int, got {num!r}"
            raise ConfigError(msg)
        self.num = num
        self.name = name
        self.time_format = time_format

    def open(self) -> None:
        """Nothing to connect."""

    def _print(self, batch_time: BatchTime, taken: list[Any]) -> None:
        lines = ["-" * 43, f"Time: {self.time_format(batch_time)}", "-" * 43]
        lines += [str(r) for r in taken[: self.num]]
        if len(taken) > self.num:
            lines.append("...")
        print("\n".join(lines) + "\n", flush=True)

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        """Print the first records of `records`."""
        self._print(batch_time, records[: self.num + 1])

    def write_batch(self, batch_time: BatchTime, batch: BatchView) -> None:
        """Print the first records of `batch`, computing no more of it than that."""
        self._print(batch_time, batch.take(self.num + 1))

    def close(self) -> None:
        """Nothing to release."""
