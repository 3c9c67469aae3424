"""KafkaSource against a real Kafka-protocol broker (librdkafka's mock cluster)."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import pytest
from _ckpt_jobs import wait_for
from _servers import produce

from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources.base import Source
from streamkeep.sources.kafka import KafkaRecord, KafkaSource, PidRateEstimator

pytestmark = pytest.mark.integration


def _source(bootstrap: str, topics: Any, **kw: Any) -> KafkaSource:
    kw.setdefault("timeout_s", 5.0)
    src = KafkaSource(topics, bootstrap_servers=bootstrap, **kw)
    src.open(None)
    return src


def _pos(src: KafkaSource) -> dict[str, Any]:
    """The source's offsets, without the topic IDs and watermarks kept alongside."""
    return {k: v for k, v in src.position().items() if ":" in k}


def _offsets(batch: list[list[Any]]) -> list[list[int]]:
    return [[r.offset for r in part] for part in batch]


def _fill(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    n = partitions * per_partition
    produce(
        bootstrap,
        topic,
        [f"v{i}".encode() for i in range(n)],
        keys=[f"k{i % partitions}".encode() for i in range(n)],
        partition=lambda i: i % partitions,
    )


def test_plan_reads_exact_ranges_across_partitions(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    _fill(bs, topic, 3, 10)
    src = _source(bs, topic)
    try:
        assert isinstance(src, Source)
        plan = src.plan(1000)
        assert plan == {f"{topic}:0": [0, 10], f"{topic}:1": [0, 10], f"{topic}:2": [0, 10]}
        assert _pos(src) == {f"{topic}:{p}": 10 for p in range(3)}
        batch = src.read(plan, 1000)
        assert _offsets(batch) == [list(range(10))] * 3
        rec = batch[1][3]
        assert isinstance(rec, KafkaRecord)
        assert (rec.topic, rec.partition, rec.offset) == (topic, 1, 3)
        assert rec.value == b"v10" and rec.key == b"k1" and isinstance(rec.timestamp, int)
        # A replay of the same plan gives the same records, also from a subrange.
        assert src.read(plan, 1000) == batch
        assert src.read({f"{topic}:2": [4, 7]}, 1000) == [batch[2][4:7]]
        # Nothing new: empty ranges, one (empty) partition each.
        assert src.plan(2000) == {f"{topic}:{p}": [10, 10] for p in range(3)}
        assert src.read(src.plan(3000), 3000) == [[], [], []]
    finally:
        src.close()
        src.close()


def test_max_records_per_partition_caps_each_batch(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 10)
    src = _source(bs, topic, max_records_per_partition=4)
    try:
        seen: list[list[int]] = [[], []]
        for t, want in ((1000, [0, 4]), (2000, [4, 8]), (3000, [8, 10]), (4000, [10, 10])):
            plan = src.plan(t)
            assert plan == {f"{topic}:0": want, f"{topic}:1": want}
            for i, part in enumerate(_offsets(src.read(plan, t))):
                seen[i] += part
        assert seen == [list(range(10))] * 2
    finally:
        src.close()


def test_starting_offsets_latest_then_new_records(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 5)
    src = _source(bs, topic, starting_offsets="latest")
    try:
        assert src.plan(1000) == {f"{topic}:0": [5, 5], f"{topic}:1": [5, 5]}
        produce(bs, topic, [b"a", b"b", b"c"], partition=1)
        plan = src.plan(2000)
        assert plan == {f"{topic}:0": [5, 5], f"{topic}:1": [5, 8]}
        assert [r.value for r in src.read(plan, 2000)[1]] == [b"a", b"b", b"c"]
    finally:
        src.close()


def test_starting_offsets_committed_falls_back_to_earliest(kafka_cluster, topic_factory):
    from confluent_kafka import Consumer, TopicPartition

    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 6)
    group = f"g-{topic}"
    c = Consumer({"bootstrap.servers": bs, "group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    c.close()
    src = _source(bs, topic, starting_offsets="committed", group_id=group)
    try:
        # Partition 0 continues from the group's offset, partition 1 has none -> earliest.
        assert src.plan(1000) == {f"{topic}:0": [4, 6], f"{topic}:1": [0, 6]}
    finally:
        src.close()
    with pytest.raises(ConfigError, match="group_id"):
        KafkaSource(topic, bootstrap_servers=bs, starting_offsets="committed")


def test_starting_offsets_explicit_mapping(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 10)
    src = _source(bs, topic, starting_offsets={(topic, 0): 7})
    try:
        plan = src.plan(1000)
        assert plan == {f"{topic}:0": [7, 10], f"{topic}:1": [0, 10]}
        assert _offsets(src.read(plan, 1000))[0] == [7, 8, 9]
    finally:
        src.close()
    src = _source(bs, topic, starting_offsets={(topic, 0): 11})
    try:
        with pytest.raises(SourceError, match=rf"{topic} partition 0 starting offset 11 is past"):
            src.plan(1000)
    finally:
        src.close()


def test_restore_continues_after_the_position(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic, other = topic_factory(2), topic_factory(1)
    _fill(bs, topic, 2, 8)
    produce(bs, other, [b"x", b"y"], partition=0)
    first = _source(bs, topic, max_records_per_partition=3)
    try:
        first.plan(1000)
        saved = first.position()
    finally:
        first.close()
    assert {k: v for k, v in saved.items() if ":" in k} == {f"{topic}:0": 3, f"{topic}:1": 3}
    # Kept with the offsets: the topic's ID and the partitions' [low, high) watermarks.
    assert set(saved["topic_ids"]) == {topic} and saved["watermarks"] == {f"{topic}:0": [0, 8], f"{topic}:1": [0, 8]}
    # A new process: same topic restored; a newly added topic uses starting_offsets.
    second = _source(bs, [topic, other], starting_offsets="latest")
    try:
        second.restore(saved)
        assert second.plan(2000) == {f"{topic}:0": [3, 8], f"{topic}:1": [3, 8], f"{other}:0": [2, 2]}
    finally:
        second.close()
    with pytest.raises(SourceError, match="is not a 'topic:partition' key"):
        second.restore({"no-partition": 1})


def test_commit_offsets_visible_to_a_separate_consumer(kafka_cluster, topic_factory):
    from confluent_kafka import Consumer, TopicPartition

    bs = kafka_cluster.bootstrap
    topic = topic_factory(3)
    _fill(bs, topic, 3, 5)
    group = f"g-{topic}"
    src = _source(bs, topic, group_id=group, max_records_per_partition=2)
    try:
        src.read(src.plan(1000), 1000)
        src.commit_offsets(src.position())
    finally:
        src.close()
    c = Consumer({"bootstrap.servers": bs, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=5)
    finally:
        c.close()
    assert [(tp.partition, tp.offset) for tp in got] == [(0, 2), (1, 2), (2, 2)]
    # The committed offsets serve a job that starts without a checkpoint.
    again = _source(bs, topic, group_id=group, starting_offsets="committed")
    try:
        assert again.plan(2000) == {f"{topic}:{p}": [2, 5] for p in range(3)}
    finally:
        again.close()


def test_commit_offsets_without_group_is_a_no_op(kafka_cluster, topic_factory):
    src = _source(kafka_cluster.bootstrap, topic_factory(1))
    try:
        src.commit_offsets({"whatever:0": 5})
    finally:
        src.close()


def test_retention_loss_is_a_source_error(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    src = _source(bs, topic)
    try:
        produce(bs, topic, [b"first"] * 3, partition=0)
        old_plan = src.plan(1000)
        assert old_plan == {f"{topic}:0": [0, 3]}
        # The mock keeps ~5 MB per partition: 7.5 MB pushes the start out.
        produce(bs, topic, [b"x" * 65536] * 120, partition=0)
        with pytest.raises(SourceError) as info:
            src.read(old_plan, 1000)
        msg = str(info.value)
        assert f"topic {topic} partition 0 offsets [0, 3)" in msg
        assert "no longer on the broker" in msg and "earliest available offset: " in msg
        # Planning from a lost position fails too, and does not move the position.
        src.restore({f"{topic}:0": 0})
        with pytest.raises(SourceError, match=rf"{topic} partition 0 offset 0 is no longer"):
            src.plan(2000)
        assert _pos(src) == {f"{topic}:0": 0}
    finally:
        src.close()


def test_new_partitions_are_picked_up(kafka_cluster, topic_factory):
    """The mock cannot add partitions, so an empty topic is recreated with more.

    To a source whose positions are all 0 that is the same as added partitions.
    A new partition of a known topic starts at its earliest offset even with
    starting_offsets="latest": all of its records are new.
    """
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    src = _source(bs, topic, starting_offsets="latest")
    try:
        assert src.plan(1000) == {f"{topic}:0": [0, 0], f"{topic}:1": [0, 0]}
        kafka_cluster.delete_topic(topic)
        kafka_cluster.create_topic(topic, 3)
        produce(bs, topic, [b"p0", b"p1", b"p2a", b"p2b"], partition=lambda i: min(i, 2))
        plan = src.plan(2000)
        assert plan == {f"{topic}:0": [0, 1], f"{topic}:1": [0, 1], f"{topic}:2": [0, 2]}
        batch = src.read(plan, 2000)
        assert [[r.value for r in part] for part in batch] == [[b"p0"], [b"p1"], [b"p2a", b"p2b"]]
    finally:
        src.close()


def test_missing_topic_is_a_clear_error(kafka_cluster):
    src = _source(kafka_cluster.bootstrap, "no-such-topic-here")
    try:
        with pytest.raises(SourceError, match="topic 'no-such-topic-here' does not exist"):
            src.plan(1000)
    finally:
        src.close()


def test_broker_down_is_retried_then_source_error(kafka_cluster_factory):
    cluster = kafka_cluster_factory(1)
    bs = cluster.bootstrap
    cluster.create_topic("events", 2)
    _fill(bs, "events", 2, 5)
    src = _source(bs, "events", timeout_s=1.0, retry_backoff_s=0.05)
    try:
        plan = src.plan(1000)
        cluster.broker_down(1)
        t0 = time.monotonic()
        with pytest.raises(SourceError) as info:
            src.plan(2000)
        assert time.monotonic() - t0 < 10
        assert "brokers are reachable" in str(info.value) and bs in str(info.value)
        assert _pos(src) == {"events:0": 5, "events:1": 5}  # not advanced
        with pytest.raises(SourceError, match=r"no progress reading events partition 0 \[0, 5\)"):
            src.read(plan, 1000)
        cluster.broker_up(1)
        src.timeout_s = 20.0  # librdkafka's reconnect backoff grew while the broker was down
        assert _offsets(src.read(plan, 1000)) == [list(range(5))] * 2
        assert src.plan(2000) == {"events:0": [5, 5], "events:1": [5, 5]}
    finally:
        src.close()


def test_broker_down_mid_read_recovers_within_the_timeout(kafka_cluster_factory):
    cluster = kafka_cluster_factory(1)
    bs = cluster.bootstrap
    cluster.create_topic("events", 1)
    _fill(bs, "events", 1, 20)
    src = _source(bs, "events", timeout_s=20.0)
    try:
        plan = src.plan(1000)
        cluster.broker_down(1)
        timer = threading.Timer(0.5, cluster.broker_up, args=(1,))
        timer.start()
        try:
            batch = src.read(plan, 1000)
        finally:
            timer.join()
        assert _offsets(batch) == [list(range(20))]
    finally:
        src.close()


def _json(raw: bytes | None) -> Any:
    assert raw is not None
    return json.loads(raw)


def test_undecodable_record_names_topic_partition_offset(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    produce(bs, topic, [b'{"a": 1}', b"not json", b'{"a": 3}'], partition=0)
    src = _source(bs, topic, value_deserializer=_json)
    try:
        with pytest.raises(SourceError) as info:
            src.read(src.plan(1000), 1000)
        assert f"topic {topic} partition 0 offset 1" in str(info.value)
        assert isinstance(info.value.__cause__, json.JSONDecodeError)
    finally:
        src.close()


def test_undecodable_record_routed_to_handler_or_dead_letter(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    produce(bs, topic, [b'{"a": 1}', b"not json", b'{"a": 3}'], partition=0)
    seen: list[tuple[KafkaRecord, Exception]] = []
    src = _source(bs, topic, value_deserializer=_json, on_error=lambda rec, exc: seen.append((rec, exc)))
    try:
        batch = src.read(src.plan(1000), 1000)
    finally:
        src.close()
    assert [r.value for r in batch[0]] == [{"a": 1}, {"a": 3}]
    assert [(r.offset, r.value) for r, _ in seen] == [(1, b"not json")]

    class ListSink:
        name = "dead-letters"
        opened = closed = 0

        def __init__(self) -> None:
            self.writes: list[tuple[int, list[Any]]] = []

        def open(self) -> None:
            self.opened += 1

        def write(self, batch_time: int, records: list[Any]) -> None:
            self.writes.append((batch_time, records))

        def close(self) -> None:
            self.closed += 1

    dead = ListSink()
    src = _source(bs, topic, value_deserializer=_json, on_error=dead)
    try:
        batch = src.read(src.plan(1000), 1000)
    finally:
        src.close()
    assert [r.value for r in batch[0]] == [{"a": 1}, {"a": 3}]
    assert dead.opened == dead.closed == 1
    [(bt, [bad])] = dead.writes
    assert bt == 1000
    assert (bad["topic"], bad["partition"], bad["offset"], bad["value"]) == (topic, 0, 1, b"not json")
    assert "JSONDecodeError" in bad["error"]


def test_rate_limit_uses_the_batch_interval(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 10)
    src = _source(bs, topic, max_rate_per_partition=3.0)
    try:
        with pytest.raises(ConfigError, match="set_batch_interval_ms"):
            src.plan(1000)
        src.set_batch_interval_ms(2000)  # 3 records/s * 2 s = 6 per partition
        assert src.plan(1000) == {f"{topic}:0": [0, 6], f"{topic}:1": [0, 6]}
    finally:
        src.close()


def test_backpressure_sizes_batches_from_observed_processing(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    _fill(bs, topic, 2, 500)
    src = _source(bs, topic, backpressure=True, max_records_per_partition=100)
    src.set_batch_interval_ms(1000)
    try:
        assert src.rate_limit is None
        assert src.plan(1000) == {f"{topic}:0": [0, 100], f"{topic}:1": [0, 100]}
        # 200 records took 2 s: the job handles ~100 records/s over the source.
        src.observe(1000, processing_ms=2000, records=200)
        src.observe(2000, processing_ms=2000, records=200)
        assert src.rate_limit == pytest.approx(100.0)
        # 100 records/s x 1 s, split by lag (equal): 50 per partition.
        assert src.plan(2000) == {f"{topic}:0": [100, 150], f"{topic}:1": [100, 150]}
    finally:
        src.close()


def test_pid_rate_estimator_follows_spark():
    est = PidRateEstimator(1000, min_rate=10)
    assert est.compute(1000, records=1000, processing_ms=500) is None  # first: 2000/s seen
    # Allowed 2000/s, processed at 1000/s: error 1000 -> rate 1000 (P=1).
    assert est.compute(2000, records=1000, processing_ms=1000) == pytest.approx(1000.0)
    # Scheduling delay adds the integral term: 1000 - 0.2 * (500 * 1000 / 1000) = 900.
    assert est.compute(3000, records=1000, processing_ms=1000, scheduling_delay_ms=500) == pytest.approx(900.0)
    assert est.compute(3000, records=10, processing_ms=1) is None  # not newer
    assert est.compute(4000, records=1, processing_ms=1000) == pytest.approx(10.0)  # floor
    with pytest.raises(ConfigError):
        PidRateEstimator(0)


def test_bad_configuration_is_refused_early():
    with pytest.raises(ConfigError, match="not a valid Kafka topic"):
        KafkaSource("bad topic", bootstrap_servers="x:1")
    with pytest.raises(ConfigError, match="starting_offsets"):
        KafkaSource("t", bootstrap_servers="x:1", starting_offsets="newest")
    with pytest.raises(ConfigError, match="may not set"):
        KafkaSource("t", bootstrap_servers="x:1", consumer_config={"group.id": "g"})
    with pytest.raises(ConfigError, match="max_records_per_partition"):
        KafkaSource("t", bootstrap_servers="x:1", max_records_per_partition=0)
    src = KafkaSource(["b", "a"], bootstrap_servers="x:1", starting_offsets={("a", 0): 5})
    assert src.name == "kafka-a+b"
    assert src.describe() == {
        "kind": "kafka",
        "name": "kafka-a+b",
        "topics": ["a", "b"],
        "starting_offsets": [["a", 0, 5]],
        "group_id": None,
        "max_records_per_partition": None,
        "max_rate_per_partition": None,
        "backpressure": False,
    }


def test_missing_confluent_kafka_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    src = KafkaSource("t", bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"pip install 'streamkeep\[kafka\]'"):
        src.open(None)


def test_remote_read_fetches_give_exactly_what_read_gives(kafka_cluster, topic_factory):
    """RemotelyReadable: the fetches (run here, as a Ray task would run them) concatenate to read()'s partitions."""
    import pickle

    from streamkeep.sources.base import RemotelyReadable

    bs = kafka_cluster.bootstrap
    topic = topic_factory(5)
    produce(bs, topic, [f"v{i}".encode() for i in range(37)], partition=lambda i: (i * i) % 5)  # uneven partitions
    src = _source(bs, topic)
    try:
        assert isinstance(src, RemotelyReadable)
        plan = src.plan(1000)
        want = src.read(plan, 1000)
        for tasks in (1, 2, 3, 5, 8):
            read = src.remote_read(plan, 1000, tasks)
            assert read is not None and 1 <= len(read.fetches) <= min(tasks, 5)
            got = [pickle.loads(pickle.dumps(f))() for f in read.fetches]  # picklable, and self-contained
            assert [p for parts, _ in got for p in parts] == want
            read.finish([extra for _, extra in got])
        assert src.remote_read(src.plan(2000), 2000, 2) is None  # nothing planned: read() is cheaper than a task
    finally:
        src.close()


def test_read_leaves_the_garbage_collector_as_it_found_it(kafka_cluster, topic_factory):
    """The read loop pauses the collector while it builds the records, and restores it, also when it raises."""
    import gc

    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    produce(bs, topic, [b'{"a": 1}', b"not json"], partition=0)
    seen: list[bool] = []

    def decode(raw: bytes | None) -> Any:
        seen.append(gc.isenabled())
        return _json(raw)

    src = _source(bs, topic, value_deserializer=decode)
    try:
        assert gc.isenabled()
        with pytest.raises(SourceError):
            src.read(src.plan(1000), 1000)
        assert gc.isenabled()  # restored after an undecodable record failed the read
        assert seen == [False, False]  # paused while the records were built
        gc.disable()
        try:
            src.read({f"{topic}:0": [0, 1]}, 1000)
            assert not gc.isenabled()  # a caller's own pause is kept
        finally:
            gc.enable()
    finally:
        src.close()



def _source_on_a_closed_port(caplog: Any, monkeypatch: Any) -> KafkaSource:
    """A source whose bootstrap address is a loopback port nothing listens on, its client's log lines captured."""
    import logging
    import socket

    from streamkeep.sources._kafka_config import CLIENT_LOG

    monkeypatch.setattr(CLIENT_LOG, "_seen", {})  # lines other tests' clients logged in this window
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="streamkeep.kafka.client")
    return KafkaSource("t", bootstrap_servers=f"127.0.0.1:{port}", timeout_s=2.0)

def test_an_unreachable_broker_logs_through_python_logging_with_repeats_collapsed(capfd, caplog, monkeypatch):
    """librdkafka's connect failures go to the ``streamkeep.kafka.client`` logger, each line once per window, not to stderr."""
    src = _source_on_a_closed_port(caplog, monkeypatch)
    try:
        src.open(None)
        with pytest.raises(SourceError):
            src.plan(1000)
        assert src._consumer is not None
        src._consumer.poll(0.5)  # a running client hands its log lines over when polled (closing one that never reached them drops them)
    finally:
        src.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "streamkeep.kafka.client"]
    assert any("Connection refused" in m for m in lines), lines
    assert len(lines) <= 6, lines  # every client's refused connects, each once (librdkafka retries them ~every 100 ms)
    err = capfd.readouterr().err  # other tests' leftover clients may still print theirs
    assert src.bootstrap_servers not in err, err[-2000:]


def test_dead_letters_of_several_partitions_come_in_topic_partition_offset_order(kafka_cluster_factory, topic_factory):
    """Brokers answer fetches in any order; the dead-letter sink still gets one order, so a replay writes the same list."""
    cluster = kafka_cluster_factory(3)  # partitions led by different brokers: their fetch replies interleave
    bs = cluster.bootstrap
    n = 6
    topic = topic_factory(n, cluster)
    values = [b"bad" if i % 3 else b'{"a": 1}' for i in range(n * 40)]
    produce(bs, topic, values, partition=lambda i: i % n)
    writes: list[list[Any]] = []

    class ListSink:
        name = "dead-letters"

        def open(self) -> None: ...

        def write(self, batch_time: int, records: list[Any]) -> None:
            writes.append(records)

        def close(self) -> None: ...

    for _ in range(3):
        src = _source(bs, topic, value_deserializer=_json, on_error=ListSink())
        try:
            src.read(src.plan(1000), 1000)
        finally:
            src.close()
    got = [[(d["topic"], d["partition"], d["offset"]) for d in w] for w in writes]
    assert len(got) == 3 and len(got[0]) == n * 40 * 2 // 3
    for order in got:
        assert order == sorted(order)


def test_a_closed_bootstrap_port_is_reported_at_once_with_the_address_the_reason_and_the_wait(caplog):
    """A source pointed at a port nothing listens on said nothing for ~12 s, then, after ~36 s, only
    "Broker transport failure". Now a WARNING names the address, "connection refused" and how to set the
    wait before the source's first Kafka request, and the SourceError says the same."""
    import logging
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    caplog.set_level(logging.WARNING, logger="streamkeep.sources.kafka")
    src = _source(f"127.0.0.1:{port}", "t", timeout_s=1.5)
    try:
        with pytest.raises(SourceError) as err:
            src.plan(1000)
    finally:
        src.close()
    msg = str(err.value)
    assert f"no broker reachable at 127.0.0.1:{port}" in msg and "connection refused" in msg and "timeout_s=" in msg, msg
    warned = [r.getMessage() for r in caplog.records if r.name == "streamkeep.sources.kafka" and r.levelno == logging.WARNING]
    assert warned and f"cannot reach the brokers at 127.0.0.1:{port}" in warned[0], warned
    assert "connection refused" in warned[0] and "timeout_s=1.5" in warned[0], warned
    # the warning came before any Kafka request of the source: none of them failed and was retried
    assert not any("failed (attempt" in m for m in warned), warned


def test_a_broker_that_comes_up_during_the_wait_is_used(kafka_cluster_factory, topic_factory, caplog):
    """Brokers that start a little after the job (docker compose) are waited for, up to timeout_s."""
    import logging

    cluster = kafka_cluster_factory(1)
    topic = topic_factory(1, cluster=cluster)
    _fill(cluster.bootstrap, topic, 1, 5)
    cluster.broker_down(1)
    caplog.set_level(logging.WARNING, logger="streamkeep.sources.kafka")
    src = _source(cluster.bootstrap, topic, timeout_s=120.0)
    got: list[Any] = []
    planner = threading.Thread(target=lambda: got.append(src.plan(1000)), daemon=True)
    try:
        planner.start()
        wait_for(lambda: any("cannot reach the brokers" in r.getMessage() for r in caplog.records), 60, "a warning that the broker is down")
        assert planner.is_alive()  # still waiting for the broker
        cluster.broker_up(1)
        planner.join(timeout=110)
        assert got == [{f"{topic}:0": [0, 5]}], got
    finally:
        planner.join(timeout=120)
        src.close()


def test_after_an_unreachable_broker_fails_the_job_no_client_line_follows_its_error(tmp_path):
    """Closing the failed job's consumer handed over librdkafka's queued "Connect to ... failed: Connection refused"
    line after the job's own ERROR line, which already says the same: a client that never reached its brokers is
    now closed silently."""
    import os
    import subprocess
    import sys

    from streamkeep import _faults

    app = tmp_path / "app.py"
    app.write_text(
        "import socket\n"
        "import streamkeep as sk\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "ssc = sk.StreamingContext(1.0)\n"
        "ssc.kafka_stream(['t'], bootstrap_servers=f'127.0.0.1:{port}', name='k', timeout_s=1.5).foreach_batch(lambda b: b.collect())\n"
        "ssc.run(max_batches=1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != _faults.ENV_VAR}
    ran = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 1, ran.stderr
    err = ran.stderr
    failed = err.find("streaming job failed at batch")
    assert failed >= 0 and "no broker reachable" in err.splitlines()[-1], err
    assert "kafka client:" not in err[failed:], err


def test_a_source_closed_before_its_broker_check_hands_over_its_client_lines(caplog, monkeypatch):
    """Only a source whose broker check raised (its error said why no broker was reached) is closed quietly: one closed
    because the job failed elsewhere dropped librdkafka's queued lines, which can be the only report of a SASL, SSL
    or configuration problem (here a refused connect stands in for them)."""
    src = _source_on_a_closed_port(caplog, monkeypatch)
    try:
        src.open(None)
        assert src._consumer is not None
        with pytest.raises(Exception, match="(?i)transport|timed out|broker"):  # a request that tried the address
            src._consumer.list_topics(timeout=0.5)
        assert not [r for r in caplog.records if r.name == "streamkeep.kafka.client"]  # still queued in the client
    finally:
        src.close()  # no plan(): the broker check never ran
    lines = [r.getMessage() for r in caplog.records if r.name == "streamkeep.kafka.client"]
    assert any("Connection refused" in m for m in lines), lines
