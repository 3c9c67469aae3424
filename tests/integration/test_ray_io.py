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


# -- sinks written where the records are --------------------------------------------------


def _words(batches: int = 3, n: int = 3000) -> list[list[str]]:
    return [[f"w{(i * 7 + b) % 50}" for i in range(n)] for b in range(batches)]


def _redis_write(prefix: str):
    def write(pipe, records):
        for w, n in records:
            pipe.hincrby(f"{prefix}:totals", w, n)  # not idempotent: applied twice would show
            pipe.rpush(f"{prefix}:log:{w}", n)
        pipe.sadd(f"{prefix}:pids", os.getpid())  # where write ran (not compared)

    return write


def _sinks_job(executor: Any, sinks: list[Any], extra: Any = None) -> None:
    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    totals = ssc.queue_stream(_words(), name="q").map(lambda w: (w, 1)).update_state_by_key(_add, name="totals")
    for s in sinks:
        totals.write_to(s)
    if extra is not None:
        extra(ssc)
    ssc.run()
    ssc.stop()


def _files(path: Any) -> dict[str, list[str]]:
    return {p.name: sorted(p.read_text().splitlines()) for p in sorted(path.iterdir()) if not p.name.startswith(".")}


def test_sinks_on_ray_write_in_the_workers_and_equal_local(tmp_path, redis_url, ray_executor, monkeypatch, kafka_cluster, topic_factory):
    import pyarrow.parquet as pq
    import redis as redis_mod
    from _servers import consume_all

    from streamkeep.sinks import FileSink, KafkaSink, RedisSink
    from streamkeep.sinks.files import ParquetSink
    from streamkeep.sinks.text import TextFilesSink

    bs = kafka_cluster.bootstrap
    client = redis_mod.Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    for label in ("local", "ray"):
        if label == "ray":  # from here on the driver must not write a record itself
            def refuse(*_a: Any, **_k: Any) -> None:
                msg = "the driver wrote a sink's records"
                raise AssertionError(msg)

            monkeypatch.setattr(FileSink, "write", refuse)
            monkeypatch.setattr(FileSink, "encode", refuse)
            monkeypatch.setattr(RedisSink, "_queue", refuse)
            monkeypatch.setattr(KafkaSink, "_encode", refuse)
            monkeypatch.setattr(TextFilesSink, "write_batch", refuse)
        topic = topic_factory(2)
        sinks = [
            FileSink(tmp_path / label / "lines", name="lines"),
            FileSink(tmp_path / label / "jsonl", name="jsonl", format="jsonl"),
            ParquetSink(tmp_path / label / "parquet", name="parquet"),
            TextFilesSink(str(tmp_path / label / "text" / "out"), "txt", name="text"),
            RedisSink(redis_url, _redis_write(label), name=f"redis-{label}"),
            KafkaSink(topic, bootstrap_servers=bs, name=f"kafka-{topic}", value=lambda kv: f"{kv[0]}={kv[1]}"),
        ]
        _sinks_job("local" if label == "local" else ray_executor, sinks)
        text_root = tmp_path / label / "text"
        out[label] = {
            "lines": _files(tmp_path / label / "lines"),
            "jsonl": _files(tmp_path / label / "jsonl"),
            "parquet": {p.name: sorted(pq.read_table(p).to_pylist(), key=repr) for p in sorted((tmp_path / label / "parquet").glob("batch-*"))},
            "text": {d.name: sorted(x for f in sorted(d.glob("part-*")) for x in f.read_text().splitlines()) for d in sorted(text_root.iterdir())},
            "text_done": sorted(d.name for d in text_root.iterdir() if (d / "_SUCCESS").exists()),
            "redis": sorted(client.hgetall(f"{label}:totals").items()),
            "redis_log": {k.decode().rsplit(":", 1)[1]: client.lrange(k, 0, -1) for k in client.scan_iter(f"{label}:log:*")},
            "kafka": sorted(m.value() for m in consume_all(bs, topic)),
            "pids": {int(p) for p in client.smembers(f"{label}:pids")},
        }
    local, ray = out["local"], out["ray"]
    assert len(local["lines"]) == 3 and len(local["kafka"]) == 150 and len(local["text_done"]) == 3
    for key in ("lines", "jsonl", "parquet", "text", "text_done", "redis", "kafka"):
        assert ray[key] == local[key], key
    assert {k: sorted(v) for k, v in ray["redis_log"].items()} == {k: sorted(v) for k, v in local["redis_log"].items()}
    assert os.getpid() not in ray["pids"] and ray["pids"]  # write ran in the workers
    assert client.keys("streamkeep:sink:*:stage:*") == []  # no staged commands left
    assert not [p for p in (tmp_path / "ray").rglob(".*part*")]  # no part files left


def _bad_write(pipe, records):
    for w, n in records:
        if w == "w7":
            msg = f"no writes for {w}"
            raise KeyError(msg)
        pipe.set(w, n)


def _text_update(values: list[int], old: Any) -> str:
    return "two\nlines" if old is not None else "one line"  # the second batch's records cannot be written as lines


def _same(message: str) -> str:
    """An error message without what differs by design: the sink's name here, a record's number (its place in its part)."""
    import re

    return re.sub(r"record #\d+", "record #N", message.replace("bad-ray", "bad-local"))


def test_a_sink_failing_in_a_task_raises_what_it_raises_in_the_driver(tmp_path, redis_url, ray_executor):
    from streamkeep.sinks import FileSink, RedisSink

    def failure(executor: Any, label: str, kind: str) -> BaseException:
        ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
        pairs = ssc.queue_stream(_words(), name="q").map(lambda w: (w, 1))
        if kind == "redis":
            pairs.update_state_by_key(_add, name="totals").write_to(RedisSink(redis_url, _bad_write, name=f"bad-{label}"))
        else:
            pairs.update_state_by_key(_text_update, name="texts").map(lambda kv: f"{kv[0]}: {kv[1]}").write_to(FileSink(tmp_path / label, name="files"))
        with pytest.raises(sk.errors.StreamkeepError) as info:
            ssc.run()
        ssc.stop()
        return info.value

    for kind in ("redis", "file"):
        local, ray = failure("local", "local", kind), failure(ray_executor, "ray", kind)
        assert type(ray) is type(local), kind
        assert type(ray.__cause__) is type(local.__cause__), kind
        assert _same(str(ray)) == _same(str(local)), kind


def _kafka_table_job(executor: Any, bootstrap: str, topic: str) -> dict[str, Any]:
    """JSON records of a 3-partition topic as tables (``tables="json"``), bad ones to a dead-letter sink."""
    import pyarrow as pa

    from streamkeep.tables import KafkaTables

    totals, dead, sizes = ListSink("totals"), ListSink("dead"), []

    class Rows:
        def on_batch_completed(self, info: Any) -> None:
            sizes.append(info.num_records)

    ssc = sk.StreamingContext(1.0, clock=ManualClock(), executor=executor)
    spec = KafkaTables("json", schema=pa.schema([("w", pa.string()), ("i", pa.int64())]), metadata=True)
    src = ssc.kafka_stream(topic, bootstrap_servers=bootstrap, name="events", max_records_per_partition=40, tables=spec, on_error=dead, timeout_s=10.0)
    agg = src.aggregate_state(by="w", aggs={"n": ("*", "count"), "s": ("i", "sum"), "off": ("_offset", "max")}, name="agg", emit="changed")
    agg.foreach_batch(lambda t, b: totals.write(t, sorted(tuple(r.values()) for r in b.to_records().collect())))
    ssc.add_listener(Rows())
    ssc.run(4)
    ssc.stop()
    return {
        "totals": totals.batches,
        "dead": [(t, sorted((d["partition"], d["offset"]) for d in rs)) for t, rs in dead.batches],
        "sizes": sizes,
    }


def test_kafka_table_job_on_ray_builds_the_tables_in_the_workers_and_equals_local(kafka_cluster, topic_factory, ray_executor, monkeypatch) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    values = [b"{bad" if i % 37 == 5 else f'{{"w": "w{i % 23}", "i": {i}}}'.encode() for i in range(300)]
    produce(bs, topic, values, partition=lambda i: i % 3)
    local = _kafka_table_job("local", bs, topic)
    assert local["dead"] and local["totals"][0][1] and local["sizes"][:2] == [120 - 4, 120 - 3]  # rows, bad records left out

    driver = os.getpid()

    def no_fetch_here(*_a: Any, **_k: Any) -> None:
        if os.getpid() == driver:
            msg = "the driver fetched Kafka records"
            raise AssertionError(msg)

    monkeypatch.setattr(kafka_mod, "fetch_ranges", no_fetch_here)
    monkeypatch.setattr(_kafka_read, "fetch_ranges", no_fetch_here)
    assert _kafka_table_job(ray_executor, bs, topic) == local
