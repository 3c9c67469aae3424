"""`StreamingListener` and the batch events it receives, shaped like PySpark's.

PySpark hands a listener Java objects: ``batchCompleted.batchInfo()`` whose
``batchTime()`` is a ``Time`` (``.milliseconds()``) and whose delays are
milliseconds (-1 when unknown). The facade builds the same shapes from the
core's `streamkeep.BatchInfo`, delivered through ``StreamingContext.add_listener``.
"""

from __future__ import annotations

import logging
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
        """Wait between the batch time and the start of processing (ms)."""
        return self._info.scheduling_delay_ms

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


class StreamingListenerBatchCompleted:
    """The event passed to ``onBatchCompleted``."""

    __slots__ = ("_info",)

    def __init__(self, info: BatchInfo) -> None:
        self._info = info

    def batchInfo(self) -> BatchInfo:
        """The completed batch."""
        return self._info


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

    streamkeep calls ``onStreamingStarted`` when the context starts and
    ``onBatchCompleted`` after every batch (after its checkpoint commit). The
    receiver, batch-submitted/started and output-operation callbacks are never
    called: there are no receivers, and a batch is one unit from plan to commit.
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
        """Never called."""

    def onBatchStarted(self, batchStarted: Any) -> None:
        """Never called."""

    def onBatchCompleted(self, batchCompleted: Any) -> None:
        """Called after each batch has been processed and committed."""

    def onOutputOperationStarted(self, outputOperationStarted: Any) -> None:
        """Never called."""

    def onOutputOperationCompleted(self, outputOperationCompleted: Any) -> None:
        """Never called."""


class ListenerAdapter:
    """Delivers the core's ``on_batch_completed(BatchInfo)`` to a PySpark listener.

    As on Spark's listener bus, an exception in the listener is logged and does
    not stop the job.
    """

    def __init__(self, listener: Any) -> None:
        self.listener = listener

    def on_batch_completed(self, info: CoreBatchInfo) -> None:
        """Call ``onBatchCompleted`` with a PySpark-shaped event."""
        self._call("onBatchCompleted", StreamingListenerBatchCompleted(BatchInfo(info)))

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
    "StreamingListener",
    "StreamingListenerBatchCompleted",
    "StreamingListenerStreamingStarted",
    "Time",
]
