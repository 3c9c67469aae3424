"""The batch loop (plan -> run -> commit) and recovery. Internal."""

from __future__ import annotations

from streamkeep.scheduler._scheduler import BatchInfo, Scheduler

__all__ = ["BatchInfo", "Scheduler"]
