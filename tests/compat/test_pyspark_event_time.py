"""Event time through the PySpark facade (issue 16): no Spark spelling exists, `to_core` is the way in.

Spark's DStream API has no event time (``withWatermark`` and ``window(col, ...)`` belong to
Structured Streaming's DataFrames), so the facade adds no camelCase alias. A facade job opens
event-time windows on ``to_core(stream)`` and wraps the result back into a facade ``DStream``;
its windows equal those of the same job written against the core API.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from _pyspark_helpers import run_batches

import streamkeep as sk
from streamkeep.compat.pyspark import DStream, SparkContext, StreamingContext, to_core
from streamkeep.testing import ManualClock

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
BATCHES = [[("ann", 1.0), ("bob", 1.5), ("ann", 2.5)], [("ann", 1.2), ("ann", 4.1)], [("ann", 0.5), ("bob", 9.0)]]


def event_time(kv: tuple[str, float]) -> datetime:
    return T0 + timedelta(seconds=kv[1])


def flat(r: sk.WindowResult) -> tuple[Any, ...]:
    return (r.key, (r.start - T0).total_seconds(), (r.end - T0).total_seconds(), r.value)


def test_a_facade_job_uses_event_time_windows_through_to_core() -> None:
    ssc = StreamingContext(SparkContext.getOrCreate(), 1)
    clicks = ssc.queueStream([list(b) for b in BATCHES])
    core = to_core(clicks).with_event_time(event_time, max_delay=1).tumbling_window(2).count_by_key(name="clicks_per_2s")
    windows, late = [], []
    DStream(core, ssc).foreachRDD(lambda rdd: windows.extend(flat(r) for r in rdd.collect()))
    DStream(core.late_records(), ssc).foreachRDD(lambda rdd: late.extend(rdd.collect()))
    run_batches(ssc, 3)

    plain = sk.StreamingContext(1.0, clock=ManualClock())
    out = plain.queue_stream(BATCHES, name="q").with_event_time(event_time, max_delay=1).tumbling_window(2).count_by_key(name="c")
    want: list[Any] = []
    out.foreach_batch(lambda b: want.extend(flat(r) for r in b.collect()))
    plain.run()
    plain.stop()
    assert windows == want == [("ann", 0.0, 2.0, 2), ("bob", 0.0, 2.0, 1), ("ann", 2.0, 4.0, 1), ("ann", 4.0, 6.0, 1)]
    assert late == [("ann", 0.5)]
