"""Executors: where a job's partitions and keyed state run.

`LocalExecutor` (embedded, the default) and `RayExecutor` (keyed state in Ray
actors; ``pip install streamkeep[ray]``, Ray is imported only when one is made) are
built in; any object
implementing `streamkeep.executors.base.Executor` can run a job
(``StreamingContext(..., executor=...)``). Stateful operator kinds are registered
in `streamkeep.executors.kinds`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkeep._util import lazy_exports
from streamkeep.executors.base import Executor
from streamkeep.executors.local import LocalExecutor

if TYPE_CHECKING:
    from streamkeep.executors.ray import RayExecutor

__all__ = ["Executor", "LocalExecutor", "RayExecutor"]

# RayExecutor's module (key partitions, the pool of Ray actors' code) is imported when the name is first used.
if not TYPE_CHECKING:  # type checkers read the imports above: a module __getattr__ would make every other name Any
    __getattr__, __dir__ = lazy_exports(__name__, {"RayExecutor": "streamkeep.executors.ray"})
