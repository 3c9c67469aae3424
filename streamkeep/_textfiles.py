"""Spark-style text output: ``prefix-<ms>[.suffix]/part-NNNNN`` plus ``_SUCCESS``.

Each file is written to a temp name and renamed, and ``_SUCCESS`` last, so a
replayed batch rewrites identical files. Local paths only.
"""

from __future__ import annotations

import os
import uuid
from typing import Any


def batch_dir(prefix: str, suffix: str | None, batch_time_ms: int) -> str:
    """The directory of one batch's text output."""
    name = f"{prefix}-{batch_time_ms}"
    return f"{name}.{suffix}" if suffix else name


def write_text_batch(prefix: str, suffix: str | None, batch_time_ms: int, partitions: list[list[Any]]) -> str:
    """Write one file per partition (``str(record)`` per line); return the directory."""
    d = batch_dir(prefix, suffix, batch_time_ms)
    os.makedirs(d, exist_ok=True)
    for i, part in enumerate(partitions):
        _atomic_write(os.path.join(d, f"part-{i:05d}"), "".join(f"{r}\n" for r in part))
    _atomic_write(os.path.join(d, "_SUCCESS"), "")
    return d


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
