"""`StreamingContext`: PySpark's streaming entry point over a `streamkeep.StreamingContext`.

Sources and ``union``/``transform`` come from the `STREAMING_CONTEXT` section
of the alias table; this module adds the lifecycle (start, stop, awaiting),
recovery (``getOrCreate``) and the one-active-context registry PySpark has.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import streamkeep as sk
from streamkeep import DStream as CoreDStream
from streamkeep.compat.pyspark._aliases import STREAMING_CONTEXT, UNSUPPORTED
from streamkeep.compat.pyspark._context import SparkContext
from streamkeep.compat.pyspark._dstream import DStream, as_batch, core_stream, records_of
from streamkeep.compat.pyspark._errors import missing_attribute, unsupported
from streamkeep.compat.pyspark._listener import ListenerAdapter, _OutputRun
from streamkeep.compat.pyspark._rdd import RDD
from streamkeep.compat.pyspark._table import build_methods

log = logging.getLogger(__name__)


class StreamingContext:
    """PySpark's StreamingContext: sources, checkpoint, start/stop, recovery.

    Args:
        sparkContext: the `SparkContext`.
        batchDuration: the batch interval in seconds.

    State is stored with the msgpack codec unless the SparkConf sets
    ``spark.streamkeep.codec`` to ``pickle``; ``spark.streamkeep.allowStateLoss``
    (comma-separated operator names) lets a restore drop those operators' state. The core context is ``ssc._ssc`` (a `streamkeep.StreamingContext`); tests can
    drive it with ``ssc._ssc.run(max_batches=...)`` instead of the wall clock.

    Example:
        >>> from streamkeep.compat.pyspark import SparkContext
        >>> sc = SparkContext("local[1]", "doc")
        >>> ssc = StreamingContext(sc, 1)
        >>> ssc.queueStream([[1, 2], [3]]).map(lambda x: x * 10).foreachRDD(lambda rdd: print(rdd.collect()))
        >>> ssc._ssc.run()
        [10, 20]
        [30]
        2
        >>> ssc.stop()
    """

    _active: ClassVar[StreamingContext | None] = None
    _lock: ClassVar[threading.RLock] = threading.RLock()

    def __init__(self, sparkContext: SparkContext, batchDuration: float | None = None, jssc: Any = None) -> None:
        if jssc is not None:
            unsupported("StreamingContext(jssc=...)", "there is no JVM")
        if not isinstance(sparkContext, SparkContext):
            msg = f"StreamingContext: sparkContext must be a SparkContext, got {type(sparkContext).__name__}"
            raise TypeError(msg)
        if batchDuration is None:
            msg = "StreamingContext: batchDuration (the batch interval in seconds) is required"
            raise ValueError(msg)
        self._sc = sparkContext
        conf = sparkContext._conf
        codec = conf.get("spark.streamkeep.codec") or "msgpack"
        allow_loss = [n.strip() for n in (conf.get("spark.streamkeep.allowStateLoss") or "").split(",") if n.strip()]
        self._ssc = sk.StreamingContext(batchDuration, codec=codec, allow_state_loss=allow_loss)
        self._core = self._ssc
        self._listeners: list[ListenerAdapter] = []
        self._outputs = 0  # output operations registered: the next one's id
        self._foreach_rdd_outputs = 0  # at least once after a crash: start() says so when there is a checkpoint

    # -- facade protocol (see _table.py) ---------------------------------------------

    def _convert(self, kind: str, value: Any, op: str) -> Any:
        if kind == "stream":
            return core_stream(value, op)
        if kind == "streams":
            return [core_stream(v, op) for v in value]
        if kind == "queue":
            return [self._partitions(r, op) for r in value]
        if kind == "partitions":
            return None if value is None else self._partitions(value, op)
        if kind == "rdds_fn":
            sc = self._sc
            return lambda batches: as_batch(value(tuple(RDD(b, sc) for b in batches)), op)
        msg = f"{op}: unknown conversion {kind!r}"  # pragma: no cover - a table bug
        raise AssertionError(msg)

    def _partitions(self, value: Any, op: str) -> list[list[Any]]:
        """An RDD's partitions; a list of records is parallelized first, as PySpark's queueStream does."""
        rdd = value if isinstance(value, RDD) else self._sc.parallelize(records_of(value, op) or [])
        return rdd._core.partitions

    def _wrap(self, kind: str, value: Any, op: str) -> Any:
        if kind == "stream":
            return DStream(value, self)
        if kind == "value":
            return value
        return None

    # -- recovery and the active context ------------------------------------------------

    @classmethod
    def getOrCreate(cls, checkpointPath: str, setupFunc: Callable[[], StreamingContext]) -> StreamingContext:
        """Resume from `checkpointPath` if it holds a committed state, else start fresh.

        Unlike PySpark, `setupFunc` runs in both cases: the checkpoint holds state
        and source positions, not code, so the graph always comes from the current
        program and the state is restored into it by operator name. If `setupFunc`
        sets no checkpoint, `checkpointPath` is used.
        """
        made: list[StreamingContext] = []

        def setup() -> sk.StreamingContext:
            ssc = setupFunc()
            if not isinstance(ssc, StreamingContext):
                msg = f"getOrCreate: setupFunc must return a StreamingContext, got {type(ssc).__name__}"
                raise TypeError(msg)
            made.append(ssc)
            return ssc._ssc

        sk.StreamingContext.get_or_create(checkpointPath, setup)
        return made[-1]

    @classmethod
    def getActive(cls) -> StreamingContext | None:
        """The started, not yet stopped StreamingContext, if any."""
        with cls._lock:
            active = cls._active
            if active is not None and active._ssc.state != "active":
                cls._active = active = None
            return active

    @classmethod
    def getActiveOrCreate(cls, checkpointPath: str | None, setupFunc: Callable[[], StreamingContext]) -> StreamingContext:
        """The active context, else ``getOrCreate(checkpointPath, setupFunc)`` (or ``setupFunc()``)."""
        active = cls.getActive()
        if active is not None:
            return active
        if checkpointPath is not None:
            return cls.getOrCreate(checkpointPath, setupFunc)
        return setupFunc()

    @property
    def sparkContext(self) -> SparkContext:
        """The SparkContext."""
        return self._sc

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start processing, one batch per interval, in a background thread."""
        with StreamingContext._lock:
            active = StreamingContext.getActive()
            if active is not None and active is not self:
                msg = "Only one StreamingContext may be started in this process; stop the active one first"
                raise ValueError(msg)
            self._ssc.start()
            StreamingContext._active = self
        if self._foreach_rdd_outputs and self._ssc.checkpoint_url is not None:
            log.warning(
                "this job has a checkpoint and %d foreachRDD output(s): foreachRDD writes are at least once. "
                "A batch whose output ran but whose checkpoint commit did not (a crash) runs again with the same "
                "input and state, so a non-idempotent write (INCRBY, LPUSH, appending to a file) applies twice. "
                "For exactly-once output write through a streamkeep sink, which applies each batch time once: "
                "to_core(stream).write_to(RedisSink(...)) (or KafkaSink, FileSink); or make the write "
                "idempotent per batch time with foreachRDD(lambda time, rdd: ...). See 'Exactly-once output' "
                "in docs/migration-from-pyspark.md.",
                self._foreach_rdd_outputs,
            )
        now = int(time.time() * 1000)
        for li in self._listeners:
            li.started(now)

    def _deactivate(self) -> None:
        with StreamingContext._lock:
            if StreamingContext._active is self:
                StreamingContext._active = None

    def awaitTermination(self, timeout: float | None = None) -> None:
        """Wait for the job to stop (or `timeout` seconds); re-raises the job's failure.

        Ctrl-C stops the context gracefully (the batch in progress commits and the
        checkpoint is released) and returns; a second Ctrl-C stops without waiting
        for that batch and raises KeyboardInterrupt.
        """
        self._await(timeout)

    def awaitTerminationOrTimeout(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds; True if the job stopped. Re-raises its failure."""
        return self._await(timeout)

    def _await(self, timeout: float | None) -> bool:
        try:
            done = self._ssc.await_termination(timeout)
        except KeyboardInterrupt:  # a second Ctrl-C: the core has released everything without waiting
            self._deactivate()
            self._sc.stop()
            raise
        except BaseException:
            self._deactivate()
            raise
        if done:
            self._deactivate()
        return done

    def stop(self, stopSparkContext: bool = True, stopGraceFully: bool = False) -> None:
        """Stop after the batch in progress (which always completes and commits).

        `stopGraceFully` also waits for the scheduler thread to exit; `stopSparkContext`
        stops the SparkContext too.
        """
        self._ssc.stop(graceful=bool(stopGraceFully))
        self._deactivate()
        if stopSparkContext:
            self._sc.stop()

    def remember(self, duration: float) -> None:
        """Accepted for compatibility; no effect (past batches' RDDs are not kept)."""
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
            msg = f"remember: duration must be a positive number of seconds, got {duration!r}"
            raise ValueError(msg)

    def addStreamingListener(self, streamingListener: Any) -> None:
        """Add a `StreamingListener`: batch submitted/started/completed, output operation started/completed events."""
        adapter = ListenerAdapter(streamingListener)
        self._listeners.append(adapter)
        self._ssc.add_listener(adapter)

    def _add_output(self, op: str, stream: CoreDStream[Any], fn: Callable[[datetime, Any], Any]) -> None:
        """Register an output operation that tells the listeners when it starts and ends, as Spark does."""
        index, self._outputs = self._outputs, self._outputs + 1
        if op == "foreachRDD":
            self._foreach_rdd_outputs += 1
        name = f"{op} at {_call_site()}"
        listeners = self._listeners  # the live list: listeners added later hear of it too

        def run(t: datetime, batch: Any) -> None:
            if not listeners:
                fn(t, batch)
                return
            started = _OutputRun(round(t.timestamp() * 1000), index, name, name, start_ms=int(time.time() * 1000))
            for li in listeners:
                li.output_started(started)
            try:
                fn(t, batch)
            except BaseException as exc:
                failed = dataclasses.replace(started, end_ms=int(time.time() * 1000), failure=f"{type(exc).__name__}: {exc}")
                for li in listeners:
                    li.output_completed(failed)
                raise
            done = dataclasses.replace(started, end_ms=int(time.time() * 1000))
            for li in listeners:
                li.output_completed(done)

        stream.foreach_batch(run)

    def __repr__(self) -> str:
        return f"<pyspark facade StreamingContext batch={self._ssc.batch_interval_ms} ms state={self._ssc.state}>"

    def __getattr__(self, name: str) -> Any:
        return missing_attribute("StreamingContext", name, UNSUPPORTED["StreamingContext"])


def _call_site() -> str:
    """``file.py:line`` of the user's code that called into the facade (Spark names output operations so)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the streamkeep package
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "<unknown>"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


build_methods(StreamingContext, STREAMING_CONTEXT)

__all__ = ["StreamingContext"]
