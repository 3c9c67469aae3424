"""Each batch of a plain Kafka read holds exactly the records of its planned offset ranges.

The reader drops records the consumer delivers past a range's end or before its
start (``streamkeep/sources/_kafka_read.py``). Past-end records reach it when a
range's last offset holds no record the consumer delivers: a transaction's commit
marker takes an offset but is never delivered, so the next delivered record lies past
the range. These tests lay out transactions on the librdkafka mock cluster, cap the
batches at two offsets each (so every other range ends on a marker), and check each batch on its own: every record of a batch lies in its range, and the batch
holds every record of it, once. Both the record path and the tables path,
both a read continuing the last one (records carried over) and a fresh source per
batch (a replay after a restart).
"""

from __future__ import annotations

from typing import Any

import pytest

from streamkeep.sources.kafka import KafkaSource
from streamkeep.tables import KafkaTables

pytestmark = pytest.mark.integration

BATCH_OFFSETS = 2  # max_records_per_partition: ranges [0, 2), [2, 4), ...


def _produce_transactions(bootstrap: str, topic: str, txns: list[tuple[list[bytes], bool]]) -> None:
    """Produce each (values, commit) transaction to partition 0: committed or aborted; each one record batch (linger)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx", "linger.ms": 50})
    p.init_transactions(30)
    for values, commit in txns:
        p.begin_transaction()
        for v in values:
            p.produce(topic, value=v, partition=0)
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)


def _layout(bootstrap: str, topic: str) -> dict[int, bytes]:
    """Three committed transactions of 3 records, each then its marker; the records by offset.

    (Not an aborted transaction: the mock cluster's fetch responses list no aborted
    transactions, so a read_committed consumer gets an aborted transaction's records.)
    """
    _produce_transactions(bootstrap, topic, [([b"a0", b"a1", b"a2"], True), ([b"b0", b"b1", b"b2"], True), ([b"c0", b"c1", b"c2"], True)])
    # offsets: a0-a2 0..2, marker 3, b0-b2 4..6, marker 7, c0-c2 8..10, marker 11
    return {0: b"a0", 1: b"a1", 2: b"a2", 4: b"b0", 5: b"b1", 6: b"b2", 8: b"c0", 9: b"c1", 10: b"c2"}


def _source(bootstrap: str, topic: str, tables: bool) -> KafkaSource:
    kw: dict[str, Any] = {"tables": KafkaTables(values="binary", metadata=True)} if tables else {}
    src = KafkaSource(topic, bootstrap_servers=bootstrap, timeout_s=10.0, max_records_per_partition=BATCH_OFFSETS, **kw)
    src.open(None)
    return src


def _got(batch: list[list[Any]], tables: bool) -> list[tuple[int, bytes]]:
    """(offset, value) of a batch's records, in order."""
    out: list[tuple[int, bytes]] = []
    for part in batch:
        if tables:
            for table in part:
                cols = table.to_pydict()
                out.extend(zip(cols["_offset"], cols["value"], strict=True))
        else:
            out.extend((r.offset, r.value) for r in part)
    return out


def _check(plan: dict[str, Any], topic: str, batch: list[list[Any]], tables: bool, records: dict[int, bytes]) -> None:
    lo, hi = plan[f"{topic}:0"]
    want = [(o, v) for o, v in sorted(records.items()) if lo <= o < hi]
    got = _got(batch, tables)
    assert got == want, f"batch of range [{lo}, {hi}): got {got}, want exactly {want}"


@pytest.mark.parametrize("tables", [False, True], ids=["records", "tables"])
def test_each_batch_holds_exactly_its_ranges_records_when_ranges_end_on_transaction_markers(kafka_cluster, topic_factory, tables):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    records = _layout(bs, topic)
    src = _source(bs, topic, tables)
    plans = []
    try:
        t = 1000
        while True:
            plan = src.plan(t)
            if not plan or plan.get(f"{topic}:0") is None:
                break
            lo, hi = plan[f"{topic}:0"]
            if hi <= lo:
                break
            _check(plan, topic, src.read(plan, t), tables, records)
            plans.append((t, plan))
            t += 1000
    finally:
        src.close()
    assert [p[f"{topic}:0"] for _, p in plans] == [[o, o + BATCH_OFFSETS] for o in range(0, 12, BATCH_OFFSETS)]

    # A replay after a restart: a fresh consumer assigned at each range's start.
    for t, plan in plans:
        again = _source(bs, topic, tables)
        try:
            _check(plan, topic, again.read(plan, t), tables, records)
        finally:
            again.close()
