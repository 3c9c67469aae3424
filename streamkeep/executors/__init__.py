"""Executors: where a job's partitions and keyed state run (local, embedded)."""

from __future__ import annotations

from streamkeep.executors.local import LocalExecutor

__all__ = ["LocalExecutor"]
