"""Checkpoint storage: layout, framing with checksums, the fenced commit log.

Knows storage (fsspec URLs) and nothing of operators, sources or sinks.
"""

from __future__ import annotations

from streamkeep.checkpoint._checkpoint import (
    Checkpoint,
    CommitRecord,
    blob_path,
    log_path,
    plan_log_path,
    plan_path,
    state_dir,
)
from streamkeep.checkpoint._format import FORMAT_VERSION, frame, unframe
from streamkeep.checkpoint._retention import CheckpointBlobs, MemoryBlobs, Retention
from streamkeep.checkpoint.storage import CheckpointStorage

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointBlobs",
    "CheckpointStorage",
    "CommitRecord",
    "MemoryBlobs",
    "Retention",
    "blob_path",
    "frame",
    "log_path",
    "plan_log_path",
    "plan_path",
    "state_dir",
    "unframe",
]
