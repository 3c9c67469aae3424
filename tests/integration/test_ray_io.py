"""Sources and sinks where the data is, on Ray: Kafka ranges fetched by the workers, sinks written by tasks.

Each test runs one job on the local executor and on the session's Ray (2 key partitions)
against real servers (the librdkafka mock broker, redis-server) and compares the results.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from _servers import produce

import streamkeep as sk
from streamkeep.sources import _kafka_read
from streamkeep.sources import kafka as kafka_mod
from streamkeep.testing import ListSink, ManualClock

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def _fill(bootstrap: str, topic: str, partitions: int, n: int) -> None:
    values = [(b"bad-%d" % i) if i % 37 == 5 else f"w{i % 23} {i}".encode() for i in range(n)]
    produce(bootstrap, topic, values, keys=[f"k{i}".encode() for i in range(n)], partition=lambda i: i % partitions)


def _decode(raw: bytes | None) -> str:
    text = (raw or b"").decode()
    if text.startswith("bad-"):
        msg = f"undecodable {text}"
        raise ValueError(msg)
    return text


def _add(values: list[int], old: int | None) -> int:
    return (old or 0) + sum(values)


def _kafka_job(executor: Any, bootstrap: str, topic: str, calls: list[Any] | None) -> dict[str, Any]:
    """Words counted per key from a 3-partition topic, with undecodable records: what every output saw."""
    totals, dead, labels, counts = ListSink("totals"), ListSink("dead"), [], []
    on_error: Any = dead if calls is None else (lambda raw, exc: calls.append((raw.partition, raw.offset, str(exc))))
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    src = ssc.kafka_stream(
        topic, bootstrap_servers=bootstrap, name="words", max_records_per_partition=40, value_deserializer=_decode, on_error=on_error, timeout_s=10.0
    )
    src.foreach_batch(lambda b: labels.append(b.source_partitions))
    src.foreach_batch(lambda b: counts.append(b.count()))
    words = src.map(lambda r: (r.value.split()[0], 1))
    words.update_state_by_key(_add, name="totals").write_to(totals)
    ssc.run(4)
    ssc.stop()
    return {
        "totals": [(t, sorted(rs)) for t, rs in totals.batches],
        "dead": [(t, sorted((d["partition"], d["offset"], d["error"]) for d in rs)) for t, rs in dead.batches],
        "labels": labels,
        "counts": counts,
    }


@pytest.mark.parametrize("on_error", ["sink", "callable"])
def test_kafka_job_on_ray_reads_in_the_workers_and_equals_local(kafka_cluster, topic_factory, ray_executor, monkeypatch, on_error):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    _fill(bs, topic, 3, 300)
    local_calls: list[Any] | None = None if on_error == "sink" else []
    local = _kafka_job("local", bs, topic, local_calls)
    assert sum(local["counts"]) > 0 and local["dead"] if on_error == "sink" else local_calls

    driver = os.getpid()

    def no_fetch_here(*_a: Any, **_k: Any) -> None:
        if os.getpid() == driver:
            msg = "the driver fetched Kafka records"
            raise AssertionError(msg)

    monkeypatch.setattr(kafka_mod, "fetch_ranges", no_fetch_here)  # the driver-side read (KafkaSource.read)
    monkeypatch.setattr(_kafka_read, "fetch_ranges", no_fetch_here)  # and the loop itself, should a remote fetch run here
    ray_calls: list[Any] | None = None if on_error == "sink" else []
    on_ray = _kafka_job(ray_executor, bs, topic, ray_calls)
    assert on_ray == local
    if on_error == "callable":
        assert sorted(ray_calls) == sorted(local_calls)  # called in the driver (the list is the driver's)
    assert all(len(set(lbl)) == 3 for lbl in on_ray["labels"])  # one "words/topic:p" label per Kafka partition
