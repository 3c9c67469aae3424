"""Implementation of the public test helpers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamkeep import _faults
from streamkeep._clock import ManualClock
from streamkeep._types import BatchTime
from streamkeep.context import StreamingContext
from streamkeep.dstream import DStream
from streamkeep.errors import ConfigError


class ListSink:
    """A sink that keeps ``(batch_time_ms, records)`` per batch in memory.

    A replayed batch time replaces the earlier entry, as an idempotent sink would.
    """

    def __init__(self, name: str = "list") -> None:
        self.name = name
        self._batches: dict[BatchTime, list[Any]] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        pass

    def write(self, batch_time: BatchTime, records: list[Any]) -> None:
        with self._lock:
            self._batches[batch_time] = list(records)

    def close(self) -> None:
        pass

    @property
    def batches(self) -> list[tuple[BatchTime, list[Any]]]:
        """(batch time, records) in batch-time order."""
        with self._lock:
            return sorted(self._batches.items())

    def records(self) -> list[Any]:
        """All records of all batches, in order."""
        return [r for _, rs in self.batches for r in rs]


def run_batches(
    setup: Callable[[StreamingContext, DStream[Any]], DStream[Any]],
    batches: Iterable[Iterable[Any]],
    *,
    batch_interval: float = 1.0,
    num_batches: int | None = None,
    num_partitions: int = 1,
    sort: bool = False,
    executor: Any = "local",
) -> list[list[Any]]:
    """Run `setup(ssc, input_stream)` over the given input batches; return the output per batch.

    The job runs with a `ManualClock`, without sleeping. By default it runs one batch
    per input batch, plus what windows need to drain; `num_batches` overrides that.
    Batches in which the output stream produced nothing (windows between slides)
    are left out. With `sort`, each batch's records are sorted (for per-key results
    whose order is not defined). `executor` is the context's (``"local"``, ``"ray"``, an
    `Executor`), so one golden test runs on every executor.
    """
    ssc = StreamingContext(batch_interval, clock=ManualClock(), executor=executor)
    stream = ssc.queue_stream(batches, name="input", num_partitions=num_partitions)
    out = setup(ssc, stream)
    if not isinstance(out, DStream):
        msg = f"run_batches: setup must return the DStream to collect, got {type(out).__name__}"
        raise ConfigError(msg)
    sink = ListSink("run_batches")
    out.write_to(sink)
    try:
        ssc.run(num_batches)
    finally:
        ssc.stop()
    result = [rs for _, rs in sink.batches]
    return [sorted(rs, key=repr) if sort else rs for rs in result]


@dataclass(frozen=True)
class CrashAt:
    """Arm a crash point for a child process: SIGKILL at the n-th time `point` is reached.

    Use `env()` to build the child's environment. Points are listed in `POINTS`.
    """

    point: str
    nth: int = 1

    POINTS = _faults.POINTS

    def __post_init__(self) -> None:
        if self.point not in _faults.POINTS:
            msg = f"unknown crash point {self.point!r}; known points: {', '.join(_faults.POINTS)}"
            raise ConfigError(msg)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """A copy of `base` (default os.environ) with the crash point armed."""
        env = dict(os.environ if base is None else base)
        env[_faults.ENV_VAR] = f"{self.point}@{self.nth}"
        return env


__all__ = ["CrashAt", "ListSink", "ManualClock", "key_count_of", "run_batches", "state_of", "stateful_operators_of"]


def _executor(ssc: StreamingContext) -> Any:
    sched = ssc._scheduler
    if sched is None:
        msg = "the job has not started: run a batch (ssc.run, ssc.start) or resume it with get_or_create first"
        raise ConfigError(msg)
    return sched.executor


def state_of(ssc: StreamingContext, operator: str) -> dict[str, Any]:
    """The whole state of stateful `operator` of a started job, as the checkpoint stores it.

    Keyed operators: ``{"set": [(key, value), ...], "del": []}`` (map_with_state with a
    timeout stores ``[state, last_ms]`` values); windows: their slices. Read through the
    job's `Executor`, so it works for any executor.
    """
    data: dict[str, Any] = _executor(ssc).snapshot(operator)
    return data


def key_count_of(ssc: StreamingContext, operator: str) -> int:
    """Keys (or records) stateful `operator` of a started job holds."""
    n: int = _executor(ssc).key_count(operator)
    return n


def stateful_operators_of(ssc: StreamingContext) -> list[str]:
    """The names of the stateful operators of a started job (what `state_of` accepts), sorted."""
    return sorted(_executor(ssc).operators())
