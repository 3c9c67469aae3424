"""Kafka JSON values decoded a partition at a time into Arrow (issue 15), against the mock Kafka broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from _servers import produce

import streamkeep as sk
from streamkeep.errors import SourceError
from streamkeep.sources.kafka import KafkaRecord
from streamkeep.tables import kafka_json_tables
from streamkeep.testing import ManualClock

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
