"""A checkpointed facade job with foreachRDD outputs says at start that they are at least once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from streamkeep.compat.pyspark import SparkContext, StreamingContext, to_core
from streamkeep.testing import ListSink

NOTE = "foreachRDD writes are at least once"


def _app(ckpt: str | None, *, foreach_rdd: bool) -> StreamingContext:
    ssc = StreamingContext(SparkContext.getOrCreate(), 1)
    counts = ssc.queueStream([["a"], ["b"]]).map(lambda w: (w, 1))
    if foreach_rdd:
        counts.foreachRDD(lambda rdd: None)
        counts.foreachRDD(lambda time, rdd: None)
    else:
        to_core(counts).write_to(ListSink(name="out"))
    if ckpt is not None:
        ssc.checkpoint(ckpt)
    return ssc


def _notes_at_start(ssc: StreamingContext, caplog: Any) -> list[str]:
    caplog.set_level(logging.WARNING, logger="streamkeep.compat.pyspark._streaming")
    ssc.start()
    ssc.stop(stopSparkContext=False)
    return [r.getMessage() for r in caplog.records if NOTE in r.getMessage()]


def test_checkpointed_foreachrdd_job_names_the_exactly_once_alternative(tmp_path: Any, caplog: Any) -> None:
    notes = _notes_at_start(_app(str(tmp_path / "ckpt"), foreach_rdd=True), caplog)
    assert len(notes) == 1
    assert "2 foreachRDD output(s)" in notes[0] and "write_to(RedisSink" in notes[0] and "Exactly-once output" in notes[0]


@pytest.mark.parametrize(("checkpointed", "foreach_rdd"), [(False, True), (True, False)])
def test_no_note_without_checkpoint_or_without_foreachrdd(tmp_path: Any, caplog: Any, checkpointed: bool, foreach_rdd: bool) -> None:
    ckpt = str(tmp_path / "ckpt") if checkpointed else None
    assert _notes_at_start(_app(ckpt, foreach_rdd=foreach_rdd), caplog) == []
