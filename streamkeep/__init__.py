"""streamkeep: Spark-Streaming-style micro-batch streams with exact, code-change-proof checkpoints.

Example:
    >>> import streamkeep as sk
    >>> ssc = sk.StreamingContext(1.0)
    >>> ssc.queue_stream([[1, 2, 3]], name="numbers").map(lambda x: x * x).foreach_batch(lambda b: print(b.collect()))
    >>> ssc.run()
    [1, 4, 9]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamkeep._version import __version__
from streamkeep.batch import Batch
from streamkeep.context import StreamingContext
from streamkeep.dstream import DStream, State
from streamkeep.errors import (
    CheckpointError,
    CheckpointInUseError,
    ConfigError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    SinkError,
    SourceError,
    StreamkeepError,
    UserFunctionError,
)
from streamkeep.scheduler import (
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

if TYPE_CHECKING:
    from streamkeep.dstream import WindowResult

__all__ = [
    "Batch",
    "BatchInfo",
    "BatchPlanned",
    "BatchReplayed",
    "CheckpointError",
    "CheckpointInUseError",
    "ConfigError",
    "CorruptCheckpointError",
    "DStream",
    "ErrorInfo",
    "IncompatibleCheckpointError",
    "JobStarted",
    "JobStopped",
    "SinkError",
    "SnapshotCompleted",
    "SourceError",
    "State",
    "StateInfo",
    "StreamingContext",
    "StreamingListener",
    "StreamkeepError",
    "UserFunctionError",
    "WindowResult",
    "__version__",
]

for _public in (
    Batch,
    BatchInfo,
    BatchPlanned,
    BatchReplayed,
    ErrorInfo,
    JobStarted,
    JobStopped,
    SnapshotCompleted,
    StateInfo,
    StreamingContext,
    StreamingListener,
    DStream,
    State,
):
    _public.__module__ = __name__
del _public


if not TYPE_CHECKING:  # type checkers read the import above: a module __getattr__ would make every other name Any

    def __getattr__(name: str) -> Any:
        """`WindowResult` on first use: event-time windows load only with the jobs that use them (its module says ``streamkeep``)."""
        if name == "WindowResult":
            from streamkeep.dstream._event_time import WindowResult

            globals()[name] = WindowResult
            return WindowResult
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)

    def __dir__() -> list[str]:
        return sorted(set(globals()) | {"WindowResult"})
