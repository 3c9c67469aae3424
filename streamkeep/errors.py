"""The exception tree of streamkeep.

Every error streamkeep raises on purpose derives from :class:`StreamkeepError`::

    StreamkeepError
     ├── ConfigError (also ValueError)        a job or operator is set up wrongly
     ├── CheckpointError                       reading or writing a checkpoint failed
     │    ├── CorruptCheckpointError           a file's checksum or framing is wrong
     │    ├── IncompatibleCheckpointError      the code changed in a way state cannot follow
     │    └── CheckpointInUseError             another driver owns the checkpoint
     ├── SourceError                           a source cannot produce its planned input
     ├── SinkError                             a sink could not write a batch
     ├── StateError                            a state store was used wrongly
     ├── WorkerLostError                       an executor lost a worker holding state (the batch is retried)
     ├── codec.UnsupportedValueError (TypeError)  a value the codec cannot store
     ├── codec.DecodeError (ValueError)        bytes that are not a valid codec payload
     └── UserFunctionError                     a user function raised (original chained)

    StreamkeepWarning (UserWarning)
     └── DerivedNameWarning                    a stateful operator or source has no name=

Messages say what is wrong, where (operator, batch time, partition, path) and
what to do next. This module imports nothing from streamkeep.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointInUseError",
    "ConfigError",
    "CorruptCheckpointError",
    "DerivedNameWarning",
    "IncompatibleCheckpointError",
    "SinkError",
    "SourceError",
    "StateError",
    "StreamkeepError",
    "StreamkeepWarning",
    "UserFunctionError",
    "WorkerLostError",
]


class StreamkeepError(Exception):
    """Root of every error streamkeep raises on purpose."""


class ConfigError(StreamkeepError, ValueError):
    """A job, operator or source is configured wrongly (found when the graph is built)."""


class CheckpointError(StreamkeepError):
    """Reading or writing a checkpoint failed."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is truncated, altered or not a streamkeep file."""


class IncompatibleCheckpointError(CheckpointError):
    """The current code cannot take over the state held in a checkpoint."""


class CheckpointInUseError(CheckpointError):
    """Another driver owns the checkpoint (or took it over from this one)."""


class SourceError(StreamkeepError):
    """A source cannot produce the input planned for a batch."""


class SinkError(StreamkeepError):
    """A sink could not write a batch; the batch is not committed."""


class StateError(StreamkeepError):
    """A state store or state handle was used wrongly."""


class WorkerLostError(StreamkeepError):
    """An executor lost a worker (a Ray actor or node) holding state during a batch.

    The scheduler reloads the state of the last commit into fresh workers and runs
    the batch again from its plan (sinks deduplicate by batch time, as after a crash).
    """


class UserFunctionError(StreamkeepError):
    """A user function raised; the original exception is chained as ``__cause__``.

    Attributes:
        operator: name of the operator whose function raised.
        batch_time_ms: the batch time (ms since the epoch) being computed.
    """

    def __init__(self, message: str, *, operator: str, batch_time_ms: int) -> None:
        super().__init__(message)
        self.operator = operator
        self.batch_time_ms = batch_time_ms

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_user_error, (str(self), self.operator, self.batch_time_ms))


def _rebuild_user_error(message: str, operator: str, batch_time_ms: int) -> UserFunctionError:
    return UserFunctionError(message, operator=operator, batch_time_ms=batch_time_ms)


class StreamkeepWarning(UserWarning):
    """Root of streamkeep's warnings."""


class DerivedNameWarning(StreamkeepWarning):
    """A stateful operator or source got a name derived from its place in the graph.

    Its state is keyed by that name in the checkpoint, so adding or reordering
    operators may then prevent restoring. Pass ``name=`` to silence this.
    """
