"""A batch pauses the cyclic GC while it computes, but not while a sink waits out a server's absence.

A sink that retries (RedisSink's backoff, KafkaSink's transactions) while its server is down
can hold a batch for minutes; the collector must run meanwhile, for the whole process. Real
servers, stopped while the job runs; what the sink sees is read where it says it retries (its
warning), and what the batch's own functions see shows the pause is still there.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

import streamkeep as sk
from streamkeep.errors import SinkError
from streamkeep.testing import ManualClock

pytestmark = pytest.mark.integration


class _GcAtRetry(logging.Handler):
    """Records whether the collector runs when a sink logs that it retries."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[bool] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.seen.append(gc.isenabled())


def _run_with_retries(ssc: sk.StreamingContext, logger: str, stop_server: Any, seen_in_batch: list[bool]) -> list[bool]:
    handler = _GcAtRetry()
    log = logging.getLogger(logger)
    log.addHandler(handler)
    try:
        assert gc.isenabled()
        ssc.run(max_batches=1)  # the server is up: the first batch is written
        stop_server()
        with pytest.raises(SinkError):
            ssc.run(max_batches=1)
    finally:
        log.removeHandler(handler)
        ssc.stop()
    assert seen_in_batch and not any(seen_in_batch)  # the batch computed with the collector paused
    assert gc.isenabled()
    return handler.seen


def test_redis_sink_backoff_runs_with_the_collector_on(redis_server_factory, tmp_path):
    from streamkeep.sinks import RedisSink

    server = redis_server_factory()
    server.start()
    seen: list[bool] = []

    def mark(r: int) -> tuple[str, int]:
        seen.append(gc.isenabled())
        return (f"k{r % 3}", 1)

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = RedisSink(
        server.url, lambda pipe, recs: [pipe.incrby(k, v) for k, v in recs], name="gcretry", max_retries=2, retry_backoff_s=0.01, timeout_s=1.0
    )
    ssc.queue_stream([[1, 2, 3], [4, 5]], name="q").map(mark).write_to(sink)
    at_retry = _run_with_retries(ssc, "streamkeep.sinks.redis", server.stop, seen)
    assert at_retry and all(at_retry), at_retry


def test_kafka_sink_retries_run_with_the_collector_on(kafka_cluster_factory, tmp_path):
    from streamkeep.sinks.kafka import KafkaSink

    cluster = kafka_cluster_factory(1)
    cluster.create_topic("out", 1)
    seen: list[bool] = []

    def mark(r: int) -> bytes:
        seen.append(gc.isenabled())
        return str(r).encode()

    ssc = sk.StreamingContext(1.0, clock=ManualClock())
    sink = KafkaSink("out", bootstrap_servers=cluster.bootstrap, name="gcretry", timeout_s=1.0, max_retries=1)
    ssc.queue_stream([[1, 2, 3], [4, 5]], name="q").map(mark).write_to(sink)
    at_retry = _run_with_retries(ssc, "streamkeep.sinks.kafka", lambda: cluster.broker_down(1), seen)
    assert at_retry and all(at_retry), at_retry
