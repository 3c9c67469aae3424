"""The Kafka source and sink (mock Kafka broker) and the Redis sink (redis-server) pass the conformance suites (issue 11.9)."""

from __future__ import annotations

from typing import Any

import pytest
from _servers import consume_all, produce

from streamkeep.testing.conformance import check_sink, check_source

pytestmark = pytest.mark.integration


def test_kafka_source(kafka_cluster: Any, topic_factory: Any) -> None:
    from streamkeep.sources.kafka import KafkaSource

    topic = topic_factory(2)
    bs = kafka_cluster.bootstrap

    def feed(i: int) -> None:
        produce(bs, topic, [f"v{i}-{j}".encode() for j in range(4)], partition=lambda j: j % 2)

    read = check_source(lambda: KafkaSource(topic, bootstrap_servers=bs, name="events", timeout_s=10.0), feed=feed)
    values = sorted(r.value if hasattr(r, "value") else r for b in read for p in b for r in p)
    assert values == sorted(f"v{i}-{j}".encode() for i in range(4) for j in range(4))


def test_kafka_sink(kafka_cluster: Any, topic_factory: Any) -> None:
    from streamkeep.sinks.kafka import KafkaSink

    topic = topic_factory(1)
    bs = kafka_cluster.bootstrap
    check_sink(
        lambda: KafkaSink(topic, bootstrap_servers=bs, name="out", timeout_s=10.0),
        lambda: [m.value().decode() for m in consume_all(bs, topic)],
        ordered=True,
    )


def test_redis_sink(redis_url: str) -> None:
    import redis

    from streamkeep.sinks.redis import RedisSink

    def write(pipe: Any, records: list[Any]) -> None:
        for r in records:
            pipe.rpush("conformance:out", r)

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        check_sink(lambda: RedisSink(redis_url, write, name="out"), lambda: client.lrange("conformance:out", 0, -1), ordered=True)
    finally:
        client.close()
