"""KafkaSource keeps a backlog's partitions assigned between reads (prefetching) and still reads exact ranges."""

from __future__ import annotations

from typing import Any

import pytest
from _servers import produce

from streamkeep.sources._kafka_read import Carry, fetch_ranges
from streamkeep.sources.kafka import KafkaSource

pytestmark = pytest.mark.integration


class _CountingConsumer:
    """Forwards to a real consumer, counting ``assign`` and ``unassign`` calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.assigns = 0
        self.unassigns = 0

    def assign(self, tps: Any) -> None:
        self.assigns += 1
        self.inner.assign(tps)

    def unassign(self) -> None:
        self.unassigns += 1
        self.inner.unassign()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _source(bootstrap: str, topic: str, **kw: Any) -> tuple[KafkaSource, _CountingConsumer]:
    src = KafkaSource(topic, bootstrap_servers=bootstrap, timeout_s=10.0, **kw)
    src.open(None)
    counting = _CountingConsumer(src._ensure_consumer())
    src._consumer = counting  # type: ignore[assignment]
    return src, counting


def _fill(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    n = partitions * per_partition
    produce(bootstrap, topic, [f"{i % partitions}:{i // partitions}".encode() for i in range(n)], partition=lambda i: i % partitions)


def _values(batch: list[list[Any]]) -> list[list[bytes]]:
    return [[r.value for r in part] for part in batch]


def test_a_backlog_read_in_batches_assigns_once_and_reads_every_record_once(kafka_cluster, topic_factory):
    """While a plan leaves records on the broker, the partitions stay assigned (librdkafka keeps
    prefetching while the batch is computed); the records past a range's end that the consumer
    handed over are kept for the next read: every record exactly once, in order."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    _fill(bs, topic, 3, 500)
    src, consumer = _source(bs, topic, max_records_per_partition=100)
    try:
        got: list[list[bytes]] = [[], [], []]
        for i in range(6):  # 5 batches of 100 per partition, then an empty plan
            plan = src.plan(1000 * (i + 1))
            for p, values in enumerate(_values(src.read(plan, 1000 * (i + 1)))):
                got[p].extend(values)
        assert got == [[f"{p}:{j}".encode() for j in range(500)] for p in range(3)]
        # One assignment for the whole backlog (the old loop assigned and unassigned at every read);
        # the read that took the last records (nothing left past them) unassigned.
        assert (consumer.assigns, consumer.unassigns) == (1, 1)
        assert src._carry.consumer is None
    finally:
        src.close()


def test_a_read_that_does_not_continue_the_kept_ranges_reassigns(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 300)
    src, consumer = _source(bs, topic)
    carry = Carry()
    more = {(topic, 0), (topic, 1)}
    try:
        out: list[list[Any]] = [[], []]
        fetch_ranges(src, [(topic, 0, 0, 100), (topic, 1, 0, 100)], out, [], 1000, carry, more)
        assert carry.consumer is consumer  # kept: both partitions have records past 100
        # A replay of another range (not where the kept ranges ended): the carried records are not used.
        out = [[], []]
        fetch_ranges(src, [(topic, 0, 50, 150), (topic, 1, 100, 200)], out, [], 2000, carry, more)
        assert _values(out) == [[f"0:{j}".encode() for j in range(50, 150)], [f"1:{j}".encode() for j in range(100, 200)]]
        assert consumer.assigns == 2
        # Only one partition continues: a new assignment too (the kept one must match the ranges).
        out = [[]]
        fetch_ranges(src, [(topic, 0, 150, 160)], out, [], 3000, carry, {(topic, 0)})
        assert _values(out) == [[f"0:{j}".encode() for j in range(150, 160)]]
        assert consumer.assigns == 3
        # Without `more` (e.g. a remote fetch, or the end of the backlog) nothing stays assigned.
        out = [[]]
        fetch_ranges(src, [(topic, 0, 160, 170)], out, [], 4000, carry, None)
        assert _values(out) == [[f"0:{j}".encode() for j in range(160, 170)]]
        assert carry.consumer is None and consumer.unassigns == 1
    finally:
        src.close()


def test_records_held_past_a_short_range_pause_the_partition_and_resume_exactly(kafka_cluster, topic_factory):
    """A partition whose range ends long before another's hands over records past its end while the
    other is read: once about a range's length (>= 1000) is held, it is paused; the next
    read resumes it and reads on from the held records without a gap or a duplicate."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 6000)
    src, _ = _source(bs, topic)
    carry = Carry()
    more = {(topic, 0), (topic, 1)}
    try:
        out: list[list[Any]] = [[], []]
        fetch_ranges(src, [(topic, 0, 0, 10), (topic, 1, 0, 5000)], out, [], 1000, carry, more)
        assert _values(out) == [[f"0:{j}".encode() for j in range(10)], [f"1:{j}".encode() for j in range(5000)]]
        # Paused once 1000 are held; what the consumer had handed over in the same call is held too.
        assert len(carry.msgs.get((topic, 0), [])) <= 1000 + 10_000
        out = [[], []]
        fetch_ranges(src, [(topic, 0, 10, 6000), (topic, 1, 5000, 5500)], out, [], 2000, carry, more)
        assert _values(out) == [[f"0:{j}".encode() for j in range(10, 6000)], [f"1:{j}".encode() for j in range(5000, 5500)]]
    finally:
        src.close()


def test_offset_commits_between_reads_do_not_take_records_of_a_kept_assignment(kafka_cluster, topic_factory):
    """commit_offsets served the broker's answers with poll(0), which returns a record when partitions
    are assigned: with the assignment kept, that record would be lost to the batch."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 400)
    src, _ = _source(bs, topic, max_records_per_partition=50, group_id=f"g-{topic}")
    try:
        got: list[list[bytes]] = [[], []]
        for i in range(9):
            t = 1000 * (i + 1)
            plan = src.plan(t)
            for p, values in enumerate(_values(src.read(plan, t))):
                got[p].extend(values)
            src.commit_offsets(src.position())
        assert got == [[f"{p}:{j}".encode() for j in range(400)] for p in range(2)]
    finally:
        src.close()


def test_a_remote_read_releases_a_kept_assignment(kafka_cluster, topic_factory):
    """When other processes read the ranges (Ray), the driver's consumer stops fetching the backlog."""
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 300)
    src, consumer = _source(bs, topic, max_records_per_partition=100)
    try:
        plan = src.plan(1000)
        assert _values(src.read(plan, 1000)) == [[f"{p}:{j}".encode() for j in range(100)] for p in range(2)]
        assert src._carry.consumer is consumer and consumer.unassigns == 0
        plan = src.plan(2000)
        read = src.remote_read(plan, 2000, 2)
        assert read is not None
        assert src._carry.consumer is None and consumer.unassigns == 1
        got = [f() for f in read.fetches]
        assert _values([p for parts, _ in got for p in parts]) == [[f"{p}:{j}".encode() for j in range(100, 200)] for p in range(2)]
        read.finish([extra for _, extra in got])
    finally:
        src.close()
