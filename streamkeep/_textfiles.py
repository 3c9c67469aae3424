"""Spark-style text output: ``prefix-<ms>[.suffix]/part-NNNNN`` plus ``_SUCCESS``.

Each file is written to a temp name and renamed, and ``_SUCCESS`` last, so a
replayed batch rewrites identical files. Local paths only.
"""

from __future__ import annotations

import os
from typing import Any

from streamkeep._util import atomic_write_file


def batch_dir(prefix: str, suffix: str | None, batch_time_ms: int) -> str:
    """The directory of one batch's text output."""
    name = f"{prefix}-{batch_time_ms}"
    return f"{name}.{suffix}" if suffix else name


def write_text_batch(prefix: str, suffix: str | None, batch_time_ms: int, partitions: list[list[Any]]) -> str:
    """Write one file per partition (``str(record)`` per line); return the directory."""
    d = batch_dir(prefix, suffix, batch_time_ms)
    os.makedirs(d, exist_ok=True)
    for i, part in enumerate(partitions):
        atomic_write_file(os.path.join(d, f"part-{i:05d}"), "".join(f"{r}\n" for r in part).encode("utf-8"))
    atomic_write_file(os.path.join(d, "_SUCCESS"), b"")
    return d
