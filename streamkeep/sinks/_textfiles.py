"""Spark-style text output: ``prefix-<ms>[.suffix]/part-NNNNN`` plus ``_SUCCESS``.

Each file is written to a temp name and renamed, and ``_SUCCESS`` last, so a
replayed batch rewrites identical files. Local paths only. Used by `TextFilesSink`
(``DStream.save_as_text_files``) and the PySpark facade's ``saveAsTextFile(s)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from streamkeep._util import atomic_write_file


def batch_dir(prefix: str, suffix: str | None, batch_time_ms: int) -> str:
    """The directory of one batch's text output."""
    name = f"{prefix}-{batch_time_ms}"
    return f"{name}.{suffix}" if suffix else name


def write_text_dir(
    directory: str, partitions: Sequence[Sequence[Any]], write: Callable[[str, bytes], None] = atomic_write_file
) -> str:
    """Write one ``part-NNNNN`` file per partition (``str(record)`` per line), then ``_SUCCESS``; return `directory`."""
    os.makedirs(directory, exist_ok=True)
    for i, part in enumerate(partitions):
        write(os.path.join(directory, f"part-{i:05d}"), "".join(f"{r}\n" for r in part).encode("utf-8"))
    write(os.path.join(directory, "_SUCCESS"), b"")
    return directory


def write_text_batch(prefix: str, suffix: str | None, batch_time_ms: int, partitions: Sequence[Sequence[Any]]) -> str:
    """Write one batch's partitions under `batch_dir`; return the directory."""
    return write_text_dir(batch_dir(prefix, suffix, batch_time_ms), partitions)
