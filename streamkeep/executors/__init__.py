"""Executors: where a job's partitions and keyed state run.

`LocalExecutor` (embedded, the default) is the only built-in one; any object
implementing `streamkeep.executors.base.Executor` can run a job
(``StreamingContext(..., executor=...)``). Stateful operator kinds are registered
in `streamkeep.executors.kinds`.
"""

from __future__ import annotations

from streamkeep.executors.base import Executor
from streamkeep.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor"]
