"""Kafka source edges: recreated topics, vanished partitions, starting-offset typos, a down group coordinator.

All against librdkafka's mock cluster (``tests/_kafka_mock.py``), which can
delete and recreate a topic, report topic IDs (it has a controller), pose as a
broker without topic IDs (``set_apiversion`` caps the Metadata request below
v10) and pin a group's coordinator to a broker that is then taken down.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from _servers import produce

from streamkeep.errors import ConfigError, SourceError
from streamkeep.sources.kafka import KafkaSource

pytestmark = pytest.mark.integration

METADATA_API = 3  # Kafka ApiKey of the Metadata request; v10+ carries topic IDs


def _source(bootstrap: str, topics: Any, **kw: Any) -> KafkaSource:
    kw.setdefault("timeout_s", 5.0)
    src = KafkaSource(topics, bootstrap_servers=bootstrap, **kw)
    src.open(None)
    return src


def _values(batch: list[list[Any]]) -> list[list[bytes]]:
    return [[r.value for r in part] for part in batch]


def _recreate(cluster: Any, topic: str, partitions: int, values: list[bytes]) -> None:
    cluster.delete_topic(topic)
    cluster.create_topic(topic, partitions)
    if values:
        produce(cluster.bootstrap, topic, values, partition=0)


def _read_five_then_stop(bootstrap: str, topic: str) -> dict[str, Any]:
    produce(bootstrap, topic, [f"old{i}".encode() for i in range(5)], partition=0)
    src = _source(bootstrap, topic)
    try:
        plan = src.plan(1000)
        assert plan == {f"{topic}:0": [0, 5]}
        src.read(plan, 1000)
        return src.position()
    finally:
        src.close()


def test_recreated_topic_is_refused_by_its_topic_id_then_read_from_earliest_on_request(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    saved = _read_five_then_stop(bs, topic)
    assert set(saved["topic_ids"]) == {topic}
    # Recreated with more records than the stored position: its offsets alone look fine.
    new = [f"new{i}".encode() for i in range(8)]
    _recreate(kafka_cluster, topic, 1, new)
    src = _source(bs, topic)
    try:
        src.restore(saved)
        with pytest.raises(SourceError) as info:
            src.plan(2000)
        msg = str(info.value)
        assert f"topic {topic} was deleted and recreated" in msg
        assert "topic ID changed" in msg and "on_recreated_topic='earliest'" in msg
        assert {k: v for k, v in src.position().items() if ":" in k} == {f"{topic}:0": 5}  # not moved
    finally:
        src.close()
    again = _source(bs, topic, on_recreated_topic="earliest")
    try:
        again.restore(saved)
        plan = again.plan(2000)
        assert plan == {f"{topic}:0": [0, 8]}
        assert _values(again.read(plan, 2000)) == [new]
        assert again.position()["topic_ids"][topic] != saved["topic_ids"][topic]
    finally:
        again.close()


def test_recreated_topic_is_refused_while_running(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    produce(bs, topic, [b"a", b"b", b"c"], partition=0)
    src = _source(bs, topic)
    try:
        src.read(src.plan(1000), 1000)
        _recreate(kafka_cluster, topic, 1, [b"x"] * 6)
        with pytest.raises(SourceError, match=rf"topic {topic} was deleted and recreated"):
            src.plan(2000)
    finally:
        src.close()


@pytest.fixture
def old_broker(kafka_cluster_factory):
    """A cluster whose brokers answer Metadata only up to v9: no topic IDs, as Kafka < 2.8."""
    cluster = kafka_cluster_factory(1)
    cluster.set_apiversion(METADATA_API, 0, 9)
    return cluster


def test_without_topic_ids_a_position_past_the_end_is_named_as_recreation(old_broker):
    cluster = old_broker
    cluster.create_topic("events", 1)
    saved = _read_five_then_stop(cluster.bootstrap, "events")
    assert "topic_ids" not in saved
    _recreate(cluster, "events", 1, [b"n1", b"n2"])
    src = _source(cluster.bootstrap, "events")
    try:
        src.restore(saved)
        with pytest.raises(SourceError) as info:
            src.plan(2000)
        msg = str(info.value)
        assert "topic events was deleted and recreated" in msg
        assert "stored position 5 is past the partition's end offset 2" in msg
    finally:
        src.close()


def test_without_topic_ids_a_vanished_partition_is_an_error_not_dropped(old_broker):
    cluster = old_broker
    cluster.create_topic("events", 2)
    produce(cluster.bootstrap, "events", [b"a", b"b", b"c", b"d"], partition=lambda i: i % 2)
    src = _source(cluster.bootstrap, "events")
    try:
        src.read(src.plan(1000), 1000)
        # Recreated with one partition and more records than partition 0's position.
        _recreate(cluster, "events", 1, [b"x"] * 5)
        with pytest.raises(SourceError) as info:
            src.plan(2000)
        msg = str(info.value)
        assert "topic events was deleted and recreated" in msg
        assert "partition 1, at position 2, no longer exists" in msg
        assert {k: v for k, v in src.position().items() if ":" in k} == {"events:0": 2, "events:1": 2}
    finally:
        src.close()


def test_without_topic_ids_the_low_watermark_going_back_is_named_as_recreation(old_broker):
    cluster = old_broker
    cluster.create_topic("events", 1)
    bs = cluster.bootstrap
    src = _source(bs, "events")
    try:
        # The mock keeps ~5 MB per partition: 7.5 MB moves the earliest offset up.
        produce(bs, "events", [b"x" * 65536] * 120, partition=0)
        first = src.plan(1000)
        low = src.position()["watermarks"]["events:0"][0]
        assert low > 0
        assert first == {"events:0": [low, 120]}
        _recreate(cluster, "events", 1, [b"y"] * 130)  # past the position: only the low watermark tells
        with pytest.raises(SourceError, match=rf"earliest offset went back from {low} to 0"):
            src.plan(2000)
    finally:
        src.close()


def test_replay_of_a_plan_for_a_vanished_partition_names_it(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    produce(bs, topic, [b"a", b"b", b"c", b"d"], partition=lambda i: i % 2)
    first = _source(bs, topic)
    try:
        plan = first.plan(1000)  # written to the checkpoint; the driver dies before the batch commits
    finally:
        first.close()
    _recreate(kafka_cluster, topic, 1, [b"x"] * 3)
    # A restart replays the plan (timeout_s is long: the error must not wait for it).
    src = _source(bs, topic, timeout_s=60.0)
    try:
        with pytest.raises(SourceError) as info:
            src.read(plan, 1000)
        msg = str(info.value)
        assert f"topic {topic} partition 1 no longer exists" in msg
        assert "on_recreated_topic='earliest'" in msg and "brokers are reachable" not in msg
    finally:
        src.close()
    lenient = _source(bs, topic, on_recreated_topic="earliest")
    try:
        assert _values(lenient.read(plan, 1000)) == [[], []]  # both ranges refer to the deleted topic
    finally:
        lenient.close()


def test_replay_of_a_plan_for_a_deleted_topic_names_it(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    produce(bs, topic, [b"a", b"b"], partition=0)
    first = _source(bs, topic)
    try:
        plan = first.plan(1000)
    finally:
        first.close()
    kafka_cluster.delete_topic(topic)
    src = _source(bs, topic, timeout_s=60.0)
    try:
        with pytest.raises(SourceError, match=rf"offsets \[0, 2\) of topic {topic} partition 0, but topic {topic} no longer exists"):
            src.read(plan, 1000)
    finally:
        src.close()


def test_starting_offsets_for_a_topic_not_read_is_refused():
    with pytest.raises(ConfigError, match=r"starting_offsets names topic\(s\) \['evnets'\] that the source does not read"):
        KafkaSource("events", bootstrap_servers="127.0.0.1:9", starting_offsets={("evnets", 0): 5})


def test_starting_offsets_for_a_missing_partition_is_refused(kafka_cluster, topic_factory):
    bs = kafka_cluster.bootstrap
    topic = topic_factory(2)
    src = _source(bs, topic, starting_offsets={(topic, 0): 0, (topic, 7): 3})
    try:
        with pytest.raises(SourceError, match=rf"starting_offsets names topic {topic} partition 7, which does not exist"):
            src.plan(1000)
    finally:
        src.close()


def test_offset_commit_to_a_down_coordinator_does_not_hold_the_batch(kafka_cluster_factory, caplog):
    cluster = kafka_cluster_factory(2)
    bs = cluster.bootstrap
    cluster.create_topic("events", 1)
    cluster.set_leader("events", 0, 1)
    cluster.set_coordinator("group", "lagmon", 2)
    produce(bs, "events", [b"a", b"b"], partition=0)
    ok = _source(bs, "events", group_id="lagmon", timeout_s=2.0)
    try:
        ok.read(ok.plan(1000), 1000)
        ok.commit_offsets(ok.position())
    finally:
        ok.close()  # waits for the answer
    assert (ok.offset_commits_ok, ok.offset_commits_failed) == (1, 0)
    cluster.broker_down(2)
    caplog.set_level(logging.WARNING, logger="streamkeep.sources.kafka")
    produce(bs, "events", [b"c"], partition=0)
    src = _source(bs, "events", group_id="lagmon", timeout_s=2.0)
    try:
        src.read(src.plan(2000), 2000)
        src.commit_offsets(src.position())
        # Sent, not waited for: the coordinator's silence cannot have been counted yet.
        assert src.offset_commits_failed == 0
    finally:
        src.close()  # waits (about timeout_s) for the commit in flight
    assert (src.offset_commits_ok, src.offset_commits_failed) == (0, 1)
    warnings = [r.getMessage() for r in caplog.records if "committing offsets" in r.getMessage()]
    assert len(warnings) == 1
    assert "group 'lagmon' failed" in warnings[0] and "committed in the checkpoint" in warnings[0]
    assert "not committed" not in warnings[0]


def _job(ckpt: str, bootstrap: str, topic: str, seen: list[tuple[int, list[bytes]]]) -> Any:
    import streamkeep as sk

    ssc = sk.StreamingContext(60.0, checkpoint=ckpt)
    ssc.kafka_stream(topic, bootstrap_servers=bootstrap, name="events", timeout_s=5.0).map(lambda r: r.value).foreach_batch(
        lambda time, batch: seen.append((int(time.timestamp() * 1000), sorted(batch.collect())))
    )
    return ssc


def test_start_after_a_backfill_ahead_of_the_clock_says_so_and_can_keep_the_lead(kafka_cluster, topic_factory, tmp_path, caplog):
    import threading

    import streamkeep as sk

    bs = kafka_cluster.bootstrap
    topic = topic_factory(1)
    produce(bs, topic, [b"a", b"b"], partition=0)
    ckpt = str(tmp_path / "ckpt")
    seen: list[tuple[int, list[bytes]]] = []
    backfill = sk.StreamingContext.get_or_create(ckpt, lambda: _job(ckpt, bs, topic, seen))
    assert backfill.run(max_batches=3) == 3  # three minutes of batch times in well under a minute
    backfill.stop()
    last = seen[-1][0]
    assert [v for _, vs in seen for v in vs] == [b"a", b"b"]
    produce(bs, topic, [b"c"], partition=0)

    caplog.set_level(logging.WARNING, logger="streamkeep.context")
    waiting = sk.StreamingContext.get_or_create(ckpt, lambda: _job(ckpt, bs, topic, seen))
    waiting.start()
    waiting.stop()
    msgs = [r.getMessage() for r in caplog.records if "ahead of the clock" in r.getMessage()]
    assert len(msgs) == 1 and "start(wait_for_clock=False)" in msgs[0] and f"next batch time ({last + 60_000} ms)" in msgs[0]
    assert seen[-1][0] == last  # it waited: no batch ran

    ran = threading.Event()
    eager = sk.StreamingContext.get_or_create(ckpt, lambda: _job(ckpt, bs, topic, seen))
    eager.add_listener(type("L", (), {"on_batch_completed": lambda self, info: ran.set()})())
    eager.start(wait_for_clock=False)
    try:
        assert ran.wait(30), "the first batch after the backfill did not run"
    finally:
        eager.stop()
    assert seen[-1] == (last + 60_000, [b"c"])  # batch times continue without a gap
