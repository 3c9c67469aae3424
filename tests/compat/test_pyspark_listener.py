"""StreamingListener facade: the batch and output-operation events PySpark fires, in Spark's order."""

from __future__ import annotations

from typing import Any

import pytest
from _pyspark_helpers import run_batches

from streamkeep.compat.pyspark import SparkContext, StreamingContext, StreamingListener
from streamkeep.errors import UserFunctionError


class _Events(StreamingListener):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[Any, ...]] = []
        self.infos: dict[str, list[Any]] = {}

    def _batch(self, kind: str, event: Any) -> None:
        info = event.batchInfo()
        self.infos.setdefault(kind, []).append(info)
        self.log.append((kind, info.batchTime().milliseconds()))

    def _output(self, kind: str, event: Any) -> None:
        info = event.outputOperationInfo()
        self.infos.setdefault(kind, []).append(info)
        self.log.append((kind, info.batchTime().milliseconds(), info.id()))

    def onBatchSubmitted(self, batchSubmitted: Any) -> None:
        self._batch("submitted", batchSubmitted)

    def onBatchStarted(self, batchStarted: Any) -> None:
        self._batch("started", batchStarted)

    def onBatchCompleted(self, batchCompleted: Any) -> None:
        self._batch("completed", batchCompleted)

    def onOutputOperationStarted(self, outputOperationStarted: Any) -> None:
        self._output("output started", outputOperationStarted)

    def onOutputOperationCompleted(self, outputOperationCompleted: Any) -> None:
        self._output("output completed", outputOperationCompleted)


def test_batch_and_output_operation_events_in_sparks_order(sc: SparkContext, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ssc = StreamingContext(sc, 1)
    events = _Events()
    ssc.addStreamingListener(events)
    stream = ssc.queueStream([[1, 2, 3], [4]])
    stream.pprint()
    stream.foreachRDD(lambda rdd: None)
    stream.saveAsTextFiles(str(tmp_path / "out"))
    run_batches(ssc, 2)
    t0, t1 = (i.batchTime().milliseconds() for i in events.infos["completed"])
    per_batch = []
    for t in (t0, t1):
        per_batch += [("submitted", t), ("started", t)]
        for op in range(3):
            per_batch += [("output started", t, op), ("output completed", t, op)]
        per_batch.append(("completed", t))
    assert events.log == per_batch

    assert [i.numRecords() for i in events.infos["submitted"]] == [3, 1]
    assert [i.numRecords() for i in events.infos["started"]] == [3, 1]
    for sub, started, done in zip(events.infos["submitted"], events.infos["started"], events.infos["completed"]):
        assert sub.submissionTime() == started.submissionTime() == done.submissionTime() > 0
        assert sub.processingStartTime() == -1 and sub.schedulingDelay() == -1  # not started yet
        assert started.processingStartTime() == done.processingStartTime() > 0
        assert started.processingEndTime() == -1 and started.processingDelay() == -1 and started.totalDelay() == -1
        assert done.processingEndTime() >= done.processingStartTime()

    names = [i.name() for i in events.infos["output completed"][:3]]
    here = "test_pyspark_listener.py:"
    assert [n.split(" at ")[0] for n in names] == ["pprint", "foreachRDD", "saveAsTextFiles"]
    assert all(n.split(" at ")[1].startswith(here) for n in names), names  # the user's call site, as Spark names them
    for info in events.infos["output completed"]:
        assert info.failureReason() is None
        assert info.endTime() is not None and info.startTime() is not None and info.duration() == info.endTime() - info.startTime()
    for info in events.infos["output started"]:
        assert info.startTime() is not None and info.endTime() is None and info.duration() is None
    assert (tmp_path / f"out-{t0}" / "_SUCCESS").exists() and "Time:" in capsys.readouterr().out


def test_a_failing_output_operation_reports_its_failure(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    events = _Events()
    ssc.addStreamingListener(events)

    def boom(rdd: Any) -> None:
        raise ValueError("no disk")

    ssc.queueStream([[1]]).foreachRDD(boom)
    with pytest.raises(UserFunctionError):
        run_batches(ssc, 1)
    (failed,) = events.infos["output completed"]
    assert failed.failureReason() == "ValueError: no disk"
    assert [e[0] for e in events.log] == ["submitted", "started", "output started", "output completed"]  # never completed
