"""Kafka records as Arrow tables (issue 15), against the mock Kafka broker.

``kafka_json_tables`` (a map_partitions function over KafkaRecords) and the source's
``tables=`` option (`KafkaTables`: one table per planned partition, no object per
record): the same records as the record path batch by batch, the same results as the
record job across a restart, bad values routed by ``on_error`` with their offsets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from _servers import produce

import streamkeep as sk
from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources.kafka import KafkaRecord, KafkaSource
from streamkeep.tables import KafkaTables, kafka_json_tables
from streamkeep.testing import ListSink, ManualClock

pytestmark = pytest.mark.integration

SCHEMA = pa.schema([("user", pa.string()), ("n", pa.int64())])


def test_kafka_json_values_to_tables_into_aggregate_state_across_a_restart(kafka_cluster, topic_factory, tmp_path: Path) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    events = [{"user": u, "n": n} for u, n in [("ann", 5), ("bob", 1), ("ann", 2), ("cy", 7)]]
    produce(bs, topic, [json.dumps(e).encode() for e in events], partition=lambda i: i % 2)
    url = str(tmp_path / "ck")
    seen: list[Any] = []

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        tables = ssc.kafka_stream(topic, bootstrap_servers=bs, name="events", timeout_s=5.0).map_partitions(kafka_json_tables(SCHEMA))
        totals = tables.aggregate_state(by="user", aggs={"n": ("n", "sum"), "last_offset": ("_offset", "max")}, name="totals")
        totals.foreach_batch(lambda b: seen.append(sorted((r["user"], r["n"]) for r in b.to_records().collect())))
        return ssc

    ssc = sk.StreamingContext.get_or_create(url, setup)
    ssc.run(max_batches=1)
    ssc.stop()
    assert seen[-1] == [("ann", 7), ("bob", 1), ("cy", 7)]
    produce(bs, topic, [json.dumps({"user": "bob", "n": 10}).encode()], partition=0)
    ssc = sk.StreamingContext.get_or_create(url, setup)  # the table state and the offsets restore together
    ssc.run(max_batches=1)
    ssc.stop()
    assert seen[-1] == [("ann", 7), ("bob", 11), ("cy", 7)]


def test_a_value_that_is_not_json_fails_the_batch_naming_the_offsets() -> None:
    f = kafka_json_tables(SCHEMA)
    recs = [KafkaRecord("t", 3, 40 + i, None, v, None) for i, v in enumerate([b'{"user": "a", "n": 1}', b"not json"])]
    with pytest.raises(SourceError, match=r"topic t partition 3 offsets 40\.\.41 are not all JSON documents"):
        f(iter(recs))
    assert f(iter([])) == []


# ----------------------------------------------------------------------------- kafka_stream(tables=...)


def _source(bs: str, topic: str | list[str], **kw: Any) -> KafkaSource:
    kw.setdefault("timeout_s", 5.0)
    src = KafkaSource(topic, bootstrap_servers=bs, **kw)
    src.open(None)
    return src


def _first_table(bs: str, topic: str, **kw: Any) -> Any:
    """The one table a fresh source reads for batch 1000 (one partition)."""
    src = _source(bs, topic, **kw)
    try:
        [[table]] = src.read(src.plan(1000), 1000)
    finally:
        src.close()
    return table


def _rows_of(parts: list[list[Any]]) -> list[list[dict[str, Any]]]:
    """Each partition's rows: a table partition as dicts, with its columns in a fixed order."""
    out = []
    for part in parts:
        assert len(part) <= 1, "one table per partition"
        out.append([{k: r[k] for k in sorted(r)} for r in (part[0].to_pylist() if part else [])])
    return out


def _as_rows(parts: list[list[KafkaRecord]]) -> list[list[dict[str, Any]]]:
    """KafkaRecords as the rows a KafkaTables("binary", metadata=True, keys=True) table holds."""
    return [
        [{"_key": r.key, "_offset": r.offset, "_partition": r.partition, "_timestamp": r.timestamp, "_topic": r.topic, "value": r.value} for r in part]
        for part in parts
    ]


@pytest.mark.parametrize("n_topics", [1, 2])
def test_a_table_partition_holds_exactly_the_records_of_its_range_batch_after_batch(kafka_cluster, topic_factory, n_topics: int) -> None:
    """Tables and KafkaRecords of the same plans, while reads keep the assignment and carry records over (one topic or two)."""
    bs = kafka_cluster.bootstrap
    topics = [topic_factory(3) for _ in range(n_topics)]
    n = 900
    for topic in topics:
        produce(bs, topic, [f"{topic[-6:]}-v{i}".encode() for i in range(n // n_topics)], keys=[None if i % 7 == 0 else f"k{i}".encode() for i in range(n // n_topics)], partition=lambda i: i % 3)
    spec = KafkaTables("binary", metadata=True, keys=True)
    recs, tabs = _source(bs, topics, name="r", max_records_per_partition=40), _source(bs, topics, name="t", max_records_per_partition=40, tables=spec)
    seen = 0
    try:
        for t in range(1000, 100_000, 1000):
            plan_r, plan_t = recs.plan(t), tabs.plan(t)
            assert plan_r == plan_t
            want = _as_rows(recs.read(plan_r, t))
            got = _rows_of(tabs.read(plan_t, t))
            assert got == want, f"batch {t}"
            seen += sum(map(len, got))
            if seen == n:
                break
    finally:
        recs.close()
        tabs.close()
    assert seen == n


def _split_words(t: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    return pa.table({"word": pc.list_flatten(pc.split_pattern(t["value"], " "))})


def _decode(b: bytes | None) -> str:
    return b.decode() if b else ""


class _Rows:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def on_batch_completed(self, info: Any) -> None:
        self.batches.append(info.num_records)


def test_the_word_count_of_the_table_stream_equals_the_record_jobs_batch_by_batch_across_a_restart(kafka_cluster, topic_factory, tmp_path: Path) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    words = [f"w{(i * 7919) % 37}" for i in range(4500)]
    lines = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]  # 900 lines: 5 batches of 3 x 60
    produce(bs, topic, [x.encode() for x in lines], partition=lambda i: i % 3)

    def add(word: str, n: int, state: Any) -> tuple[str, int]:  # the batch's updated counts, as aggregate_state(emit="changed")
        total = (state.get() if state.exists() else 0) + n
        state.update(total)
        return (word, total)

    rec_out, rec_rows = ListSink("records"), _Rows()
    ssc = sk.StreamingContext(1.0, checkpoint=str(tmp_path / "records"), clock=ManualClock())
    (
        ssc.kafka_stream(topic, bootstrap_servers=bs, name="lines", max_records_per_partition=60, value_deserializer=_decode, timeout_s=5.0)
        .map(lambda r: r.value)
        .flat_map(str.split)
        .map(lambda w: (w, 1))
        .reduce_by_key(lambda a, b: a + b)
        .map_with_state(add, name="counts")
        .foreach_batch(lambda t, b: rec_out.write(t, sorted(b.collect())))
    )
    ssc.add_listener(rec_rows)
    ssc.run(max_batches=5)
    ssc.stop()

    url = str(tmp_path / "tables")
    tab_out, tab_rows = ListSink("tables"), _Rows()

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=url, clock=ManualClock())
        tables = ssc.kafka_stream(topic, bootstrap_servers=bs, name="lines", max_records_per_partition=60, tables="string", timeout_s=5.0)
        counts = tables.map_tables(_split_words).aggregate_state(by="word", aggs={"n": ("*", "count")}, name="counts", emit="changed")
        counts.foreach_batch(lambda t, b: tab_out.write(t, sorted((r["word"], r["n"]) for r in b.to_records().collect())))
        ssc.add_listener(tab_rows)
        return ssc

    for batches in (2, 3):  # stopped after 2 batches and resumed from the checkpoint
        ssc = sk.StreamingContext.get_or_create(url, setup)
        ssc.run(max_batches=batches)
        ssc.stop()
    assert len(rec_out.batches) == 5 and all(rows for _, rows in rec_out.batches)
    assert tab_out.batches == rec_out.batches
    assert tab_rows.batches == rec_rows.batches == [180] * 5  # a table's rows count as records (3 partitions x 60)


SCHEMA2 = pa.schema([("user", pa.string()), ("n", pa.int64())])


def _json_values() -> list[bytes | None]:
    return [
        b'{"user": "ann", "n": 1}',
        b"not json",
        b'{"user": "bob",\n "n": 2}',  # pretty-printed: a line break is whitespace
        b"[1, 2]",  # JSON, not an object
        None,  # a tombstone: a row of nulls
        b'{"user": "cy", "n": "three"}',  # not of the schema
        b'{"user": "dee", "n": 4, "extra": true}',  # a field the schema lacks: dropped
        b'{"user": "eve", "n": 5}{"user": "eve", "n": 6}',  # two documents in one value
        b"",
        b'{"user": "fay", "n": 7}',
    ]


def _produce_values(bs: str, topic: str, values: list[bytes | None]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bs, "linger.ms": 5})
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0


def test_json_values_parse_in_one_table_and_bad_ones_go_to_the_dead_letter_sink_with_their_offsets(kafka_cluster, topic_factory) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    _produce_values(bs, topic, _json_values())
    dead = ListSink("dead")
    table = _first_table(bs, topic, tables=KafkaTables("json", schema=SCHEMA2, metadata=True), on_error=dead)
    assert table.column_names == ["user", "n", "_topic", "_partition", "_offset", "_timestamp"]
    rows = [(r["user"], r["n"], r["_offset"]) for r in table.to_pylist()]
    assert rows == [("ann", 1, 0), ("bob", 2, 2), (None, None, 4), ("dee", 4, 6), ("fay", 7, 9)]
    [(bt, bad)] = dead.batches
    assert bt == 1000
    assert [(b["topic"], b["partition"], b["offset"]) for b in bad] == [(topic, 0, o) for o in (1, 3, 5, 7, 8)]
    assert bad[0]["value"] == b"not json" and "JSONDecodeError" in bad[0]["error"]
    assert "not a JSON object" in bad[1]["error"]


@pytest.mark.parametrize("blank", [b"", b"  \t"])
def test_a_two_document_value_and_a_blank_one_whose_row_counts_cancel_out_still_go_to_the_dead_letter_sink(
    kafka_cluster, topic_factory, blank: bytes
) -> None:
    """Two documents in one value make two rows and a blank value none: the batch's row count matches, yet
    neither is one JSON object (no made-up row at the blank value's offset)."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    _produce_values(bs, topic, [b'{"user": "ann", "n": 1}', b'{"user": "eve", "n": 5}{"user": "evil", "n": 999}', blank, b'{"user": "fay", "n": 7}'])
    dead = ListSink("dead")
    table = _first_table(bs, topic, tables=KafkaTables("json", schema=SCHEMA2, metadata=True), on_error=dead)
    assert [(r["user"], r["n"], r["_offset"]) for r in table.to_pylist()] == [("ann", 1, 0), ("fay", 7, 3)]
    [(_, bad)] = dead.batches
    assert [b["offset"] for b in bad] == [1, 2]


def test_json_values_that_fail_call_on_error_with_the_raw_record_or_fail_the_batch_naming_the_offset(kafka_cluster, topic_factory) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    _produce_values(bs, topic, [b'{"user": "ann", "n": 1}', b'{"user": "bob", "n": "x"}'])
    seen: list[tuple[KafkaRecord, Exception]] = []
    table = _first_table(bs, topic, tables=KafkaTables("json", schema=SCHEMA2), on_error=lambda rec, exc: seen.append((rec, exc)))
    assert table.to_pylist() == [{"user": "ann", "n": 1}]
    [(rec, exc)] = seen
    assert isinstance(rec, KafkaRecord) and (rec.topic, rec.partition, rec.offset, rec.value) == (topic, 0, 1, b'{"user": "bob", "n": "x"}')
    assert isinstance(exc, Exception)
    src = _source(bs, topic, tables=KafkaTables("json", schema=SCHEMA2))
    try:
        with pytest.raises(SourceError, match=rf"cannot decode the record at topic {topic} partition 0 offset 1"):
            src.read(src.plan(1000), 1000)
    finally:
        src.close()


def test_string_values_that_are_not_utf8_go_to_the_dead_letter_sink_and_tombstones_are_nulls(kafka_cluster, topic_factory) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    _produce_values(bs, topic, [b"caf\xc3\xa9", b"\xff\xfe bad", None, b"ok"])
    dead = ListSink("dead")
    table = _first_table(bs, topic, tables="string", on_error=dead)
    assert table.schema == pa.schema([("value", pa.string())])
    assert table.column("value").to_pylist() == ["café", None, "ok"]
    [(_, [bad])] = dead.batches
    assert (bad["offset"], bad["value"]) == (1, b"\xff\xfe bad") and "UnicodeDecodeError" in bad["error"]


def test_json_values_without_a_schema_are_inferred_and_a_type_clash_names_the_fix(kafka_cluster, topic_factory) -> None:
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    _produce_values(bs, topic, [b'{"a": 1}', b'{"a": 2, "b": "x"}'])
    src = _source(bs, topic, tables="json")
    try:
        [[table]] = src.read(src.plan(1000), 1000)
        assert table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]
        _produce_values(bs, topic, [b'{"a": 3}', b'{"a": "text"}'])
        with pytest.raises(SourceError, match=r"offsets 2\.\.3 give a field different types .*pass a schema"):
            src.read(src.plan(2000), 2000)
    finally:
        src.close()


def test_tables_refuse_deserialisers_and_unknown_formats() -> None:
    with pytest.raises(ConfigError, match="drop key_deserializer= and value_deserializer="):
        KafkaSource("t", bootstrap_servers="127.0.0.1:1", tables="string", value_deserializer=bytes.decode)
    with pytest.raises(ConfigError, match="values must be one of 'binary', 'string', 'json'"):
        KafkaTables("csv")
    with pytest.raises(ConfigError, match="a schema applies to values='json' only"):
        KafkaTables("string", schema=SCHEMA2)
    with pytest.raises(ConfigError, match="tables must be None"):
        KafkaSource("t", bootstrap_servers="127.0.0.1:1", tables=3)
    src = KafkaSource("t", bootstrap_servers="127.0.0.1:1", tables=KafkaTables("json", schema=SCHEMA2))
    assert src.describe()["tables"] == {"values": "json", "schema": str(SCHEMA2), "metadata": False, "keys": False}
    assert "tables" not in KafkaSource("t", bootstrap_servers="127.0.0.1:1").describe()


def test_remote_read_fetches_of_a_table_source_give_its_tables_and_its_dead_letters(kafka_cluster, topic_factory) -> None:
    """The fetches a Ray task runs (run here, pickled) build the tables in the worker; bad values reach the driver's sink."""
    import pickle

    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    values = [b"not json" if i == 7 else f'{{"i": {i}}}'.encode() for i in range(30)]
    produce(bs, topic, values, partition=lambda i: i % 3)
    dead = ListSink("dead")
    src = _source(bs, topic, tables=KafkaTables("json", schema=pa.schema([("i", pa.int64())]), metadata=True), on_error=dead)
    try:
        plan = src.plan(1000)
        want = _rows_of(src.read(plan, 1000))
        for tasks in (1, 2, 3):
            read = src.remote_read(plan, 1000, tasks)
            assert read is not None
            got = [pickle.loads(pickle.dumps(f))() for f in read.fetches]  # picklable, and self-contained
            got = pickle.loads(pickle.dumps(got))  # the tables travel back to the driver
            assert _rows_of([p for parts, _ in got for p in parts]) == want
            read.finish([extra for _, extra in got])
    finally:
        src.close()
    assert sorted(r["i"] for part in want for r in part) == [i for i in range(30) if i != 7]
    assert len(dead.batches) == 1  # one batch time: each write replaces the last, as an idempotent sink
    [(_, [bad])] = dead.batches
    assert (bad["partition"], bad["offset"], bad["value"]) == (1, 2, b"not json")
