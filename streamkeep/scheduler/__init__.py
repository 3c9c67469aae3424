"""The batch loop (plan -> run -> commit) and recovery. Internal."""

from __future__ import annotations

from streamkeep.scheduler._events import (
    BatchInfo,
    BatchPlanned,
    BatchReplayed,
    ErrorInfo,
    JobStarted,
    JobStopped,
    SnapshotCompleted,
    StateInfo,
    StreamingListener,
)
from streamkeep.scheduler._scheduler import Scheduler

__all__ = [
    "BatchInfo",
    "BatchPlanned",
    "BatchReplayed",
    "ErrorInfo",
    "JobStarted",
    "JobStopped",
    "Scheduler",
    "SnapshotCompleted",
    "StateInfo",
    "StreamingListener",
]
