"""`StreamingListener` and the batch events it receives, shaped like PySpark's.

PySpark hands a listener Java objects: ``batchCompleted.batchInfo()`` whose
``batchTime()`` is a ``Time`` (``.milliseconds()``) and whose delays are
milliseconds (-1 when unknown). The facade builds the same shapes from the
core's `streamkeep.BatchInfo`, delivered through ``StreamingContext.add_listener``,
and from the output operations the facade registers (``foreachRDD``, ``pprint``,
``saveAsTextFiles``), which it runs itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from streamkeep import BatchInfo as CoreBatchInfo

log = logging.getLogger("streamkeep.compat.pyspark")


class Time:
    """Spark's ``Time``: a batch time."""

    __slots__ = ("_ms",)

    def __init__(self, millis: int) -> None:
        self._ms = int(millis)

    def milliseconds(self) -> int:
        """Milliseconds since the epoch."""
        return self._ms

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Time) and other._ms == self._ms

    def __hash__(self) -> int:
        return hash(self._ms)

    def __repr__(self) -> str:
        return f"{self._ms} ms"


class BatchInfo:
    """PySpark's (Java) BatchInfo of a completed batch; times and delays in ms."""

    __slots__ = ("_info",)

    def __init__(self, info: CoreBatchInfo) -> None:
        self._info = info

    def batchTime(self) -> Time:
        """The batch time."""
        return Time(self._info.batch_time_ms)

    def numRecords(self) -> int:
        """Records read from the sources for this batch."""
        return self._info.num_records

    def submissionTime(self) -> int:
        """When the batch was submitted (ms since the epoch)."""
        return self._info.submission_ms

    def processingStartTime(self) -> int:
        """When processing started (ms since the epoch)."""
        return self._info.processing_start_ms

    def processingEndTime(self) -> int:
        """When processing ended (ms since the epoch)."""
        return self._info.processing_end_ms

    def schedulingDelay(self) -> int:
        """Wait between the batch time and the start of processing (ms; -1 before it starts)."""
        return -1 if self._info.processing_start_ms < 0 else self._info.scheduling_delay_ms

    def processingDelay(self) -> int:
        """Time spent processing and committing the batch (ms)."""
        return self._info.processing_delay_ms

    def totalDelay(self) -> int:
        """Scheduling plus processing delay (ms)."""
        return self._info.total_delay_ms

    def streamIdToInputInfo(self) -> dict[int, Any]:
        """Per-input details are not reported: an empty dict."""
        return {}

    def outputOperationInfos(self) -> dict[int, Any]:
        """Per-output details are not reported: an empty dict."""
        return {}

    def __repr__(self) -> str:
        return f"BatchInfo(batchTime={self._info.batch_time_ms}, numRecords={self._info.num_records})"


class _BatchEvent:
    __slots__ = ("_info",)

    def __init__(self, info: BatchInfo) -> None:
        self._info = info

    def batchInfo(self) -> BatchInfo:
        """The batch."""
        return self._info


class StreamingListenerBatchSubmitted(_BatchEvent):
    """The event passed to ``onBatchSubmitted`` (processing times -1: not started)."""


class StreamingListenerBatchStarted(_BatchEvent):
    """The event passed to ``onBatchStarted`` (``processingEndTime()`` and the delays -1: still running)."""


class StreamingListenerBatchCompleted(_BatchEvent):
    """The event passed to ``onBatchCompleted``."""


@dataclass
class _OutputRun:
    batch_time_ms: int
    id: int
    name: str
    description: str
    start_ms: int | None = None
    end_ms: int | None = None
    failure: str | None = None


class OutputOperationInfo:
    """PySpark's (Java) OutputOperationInfo: one output operation of one batch."""

    __slots__ = ("_run",)

    def __init__(self, run: _OutputRun) -> None:
        self._run = run

    def batchTime(self) -> Time:
        """The batch time."""
        return Time(self._run.batch_time_ms)

    def id(self) -> int:
        """The output operation's id: its place among the context's output operations, from 0."""
        return self._run.id

    def name(self) -> str:
        """E.g. ``foreachRDD at app.py:12``."""
        return self._run.name

    def description(self) -> str:
        """Where the output operation was registered."""
        return self._run.description

    def startTime(self) -> int | None:
        """When it started (ms since the epoch)."""
        return self._run.start_ms

    def endTime(self) -> int | None:
        """When it ended (ms since the epoch); None while it runs."""
        return self._run.end_ms

    def failureReason(self) -> str | None:
        """The error it failed with, or None."""
        return self._run.failure

    def duration(self) -> int | None:
        """endTime - startTime (ms); None while it runs."""
        r = self._run
        return None if r.start_ms is None or r.end_ms is None else r.end_ms - r.start_ms

    def __repr__(self) -> str:
        return f"OutputOperationInfo(batchTime={self._run.batch_time_ms}, id={self._run.id}, name={self._run.name!r})"


class _OutputEvent:
    __slots__ = ("_info",)

    def __init__(self, info: OutputOperationInfo) -> None:
        self._info = info

    def outputOperationInfo(self) -> OutputOperationInfo:
        """The output operation."""
        return self._info


class StreamingListenerOutputOperationStarted(_OutputEvent):
    """The event passed to ``onOutputOperationStarted``."""


class StreamingListenerOutputOperationCompleted(_OutputEvent):
    """The event passed to ``onOutputOperationCompleted`` (``failureReason()`` says whether it failed)."""


class StreamingListenerStreamingStarted:
    """The event passed to ``onStreamingStarted``."""

    __slots__ = ("_time",)

    def __init__(self, time_ms: int) -> None:
        self._time = time_ms

    @property
    def time(self) -> int:
        """When streaming started (ms since the epoch)."""
        return self._time


class StreamingListener:
    """Subclass and override the callbacks you need (all do nothing by default).

    streamkeep calls ``onStreamingStarted`` when the context starts; for every
    batch ``onBatchSubmitted`` then ``onBatchStarted`` once its input is read (a
    batch is submitted and started at once: batches never queue), around each of
    its output operations ``onOutputOperationStarted`` and
    ``onOutputOperationCompleted``, and ``onBatchCompleted`` after its checkpoint
    commit. The receiver callbacks are never called: there are no receivers.
    """

    def __init__(self) -> None:
        pass

    def onStreamingStarted(self, streamingStarted: Any) -> None:
        """Called when the streaming has been started."""

    def onReceiverStarted(self, receiverStarted: Any) -> None:
        """Never called (there are no receivers)."""

    def onReceiverError(self, receiverError: Any) -> None:
        """Never called (there are no receivers)."""

    def onReceiverStopped(self, receiverStopped: Any) -> None:
        """Never called (there are no receivers)."""

    def onBatchSubmitted(self, batchSubmitted: Any) -> None:
        """Called when a batch's input is read, just before ``onBatchStarted``."""

    def onBatchStarted(self, batchStarted: Any) -> None:
        """Called when a batch's input is read, before its operators and outputs run."""

    def onBatchCompleted(self, batchCompleted: Any) -> None:
        """Called after each batch has been processed and committed."""

    def onOutputOperationStarted(self, outputOperationStarted: Any) -> None:
        """Called before each output operation (foreachRDD, pprint, saveAsTextFiles) of a batch."""

    def onOutputOperationCompleted(self, outputOperationCompleted: Any) -> None:
        """Called after each output operation of a batch, also when it failed (see ``failureReason()``)."""


class ListenerAdapter:
    """Delivers the core's ``on_batch_completed(BatchInfo)`` to a PySpark listener.

    As on Spark's listener bus, an exception in the listener is logged and does
    not stop the job.
    """

    def __init__(self, listener: Any) -> None:
        self.listener = listener

    def on_batch_started(self, info: CoreBatchInfo) -> None:
        """Call ``onBatchSubmitted`` (processing times -1), then ``onBatchStarted``."""
        submitted = CoreBatchInfo(info.batch_time_ms, info.num_records, info.submission_ms, -1, -1)
        self._call("onBatchSubmitted", StreamingListenerBatchSubmitted(BatchInfo(submitted)))
        self._call("onBatchStarted", StreamingListenerBatchStarted(BatchInfo(info)))

    def on_batch_completed(self, info: CoreBatchInfo) -> None:
        """Call ``onBatchCompleted`` with a PySpark-shaped event."""
        self._call("onBatchCompleted", StreamingListenerBatchCompleted(BatchInfo(info)))

    def output_started(self, run: _OutputRun) -> None:
        """Call ``onOutputOperationStarted``."""
        self._call("onOutputOperationStarted", StreamingListenerOutputOperationStarted(OutputOperationInfo(run)))

    def output_completed(self, run: _OutputRun) -> None:
        """Call ``onOutputOperationCompleted``."""
        self._call("onOutputOperationCompleted", StreamingListenerOutputOperationCompleted(OutputOperationInfo(run)))

    def started(self, time_ms: int) -> None:
        """Call ``onStreamingStarted``."""
        self._call("onStreamingStarted", StreamingListenerStreamingStarted(time_ms))

    def _call(self, name: str, event: Any) -> None:
        cb = getattr(self.listener, name, None)
        if cb is None:
            return
        try:
            cb(event)
        except Exception:
            log.exception("StreamingListener %r raised in %s; the job goes on (as on Spark's listener bus)", self.listener, name)


__all__ = [
    "BatchInfo",
    "ListenerAdapter",
    "OutputOperationInfo",
    "StreamingListener",
    "StreamingListenerBatchCompleted",
    "StreamingListenerBatchStarted",
    "StreamingListenerBatchSubmitted",
    "StreamingListenerOutputOperationCompleted",
    "StreamingListenerOutputOperationStarted",
    "StreamingListenerStreamingStarted",
    "Time",
]
