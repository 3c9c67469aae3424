"""KafkaUtils.createDirectStream against the Kafka mock broker (real protocol)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _pyspark_helpers import run_batches
from _servers import produce

from streamkeep.compat.pyspark import KafkaUtils, SparkConf, SparkContext, StreamingContext, TopicAndPartition

pytestmark = pytest.mark.integration


def _collect(stream: Any) -> list[list[Any]]:
    out: list[list[Any]] = []
    stream.foreachRDD(lambda rdd: out.append(rdd.collect()))
    return out


def test_direct_stream_yields_decoded_key_value_pairs(sc: SparkContext, kafka_cluster: Any, topic_factory: Any) -> None:
    topic = topic_factory(partitions=1)
    produce(kafka_cluster.bootstrap, topic, [b"v1", b"v2", "v\u00e9"], keys=[b"k1", None, b"k3"])
    ssc = StreamingContext(sc, 1)
    got = _collect(KafkaUtils.createDirectStream(ssc, [topic], {"metadata.broker.list": kafka_cluster.bootstrap, "auto.offset.reset": "smallest"}))
    run_batches(ssc, 2)
    assert got == [[("k1", "v1"), (None, "v2"), ("k3", "v\u00e9")], []]


def test_largest_is_the_default_reset_as_in_spark(sc: SparkContext, kafka_cluster: Any, topic_factory: Any) -> None:
    topic = topic_factory(partitions=2)
    produce(kafka_cluster.bootstrap, topic, [b"old"] * 4, partition=lambda i: i % 2)
    ssc = StreamingContext(sc, 1)
    got = _collect(KafkaUtils.createDirectStream(ssc, [topic], {"bootstrap.servers": kafka_cluster.bootstrap}).map(lambda kv: kv[1]))
    ssc._ssc.run(max_batches=1)
    produce(kafka_cluster.bootstrap, topic, [b"new1", b"new2"], partition=lambda i: i % 2)
    run_batches(ssc, 1)
    assert got == [[], ["new1", "new2"]]


def test_from_offsets_decoders_and_message_handler(sc: SparkContext, kafka_cluster: Any, topic_factory: Any) -> None:
    topic = topic_factory(partitions=1)
    produce(kafka_cluster.bootstrap, topic, [json.dumps({"n": i}).encode() for i in range(5)])
    ssc = StreamingContext(sc, 1)
    params = {"metadata.broker.list": kafka_cluster.bootstrap, "group.id": "compat-test"}
    start = {TopicAndPartition(topic, 0): 3}
    decoded = _collect(KafkaUtils.createDirectStream(ssc, [topic], params, fromOffsets=start, valueDecoder=lambda b: json.loads(b)))
    handled = _collect(
        KafkaUtils.createDirectStream(
            ssc, [topic], params, fromOffsets={(topic, 0): 1}, messageHandler=lambda m: (m.topic == topic, m.partition, m.offset, m.message)
        )
    )
    run_batches(ssc, 1)
    assert decoded == [[(None, {"n": 3}), (None, {"n": 4})]]
    assert handled == [[(True, 0, o, json.dumps({"n": o})) for o in range(1, 5)]]


def test_spark_conf_rate_limit_applies(kafka_cluster: Any, topic_factory: Any) -> None:
    topic = topic_factory(partitions=1)
    produce(kafka_cluster.bootstrap, topic, [b"x"] * 10)
    sc = SparkContext(conf=SparkConf().setMaster("local[1]").setAppName("rate").set("spark.streaming.kafka.maxRatePerPartition", 4))
    ssc = StreamingContext(sc, 1)
    got = _collect(KafkaUtils.createDirectStream(ssc, [topic], {"metadata.broker.list": kafka_cluster.bootstrap, "auto.offset.reset": "smallest"}))
    run_batches(ssc, 3)
    assert [len(b) for b in got] == [4, 4, 2]
    sc.stop()


def test_bad_kafka_arguments(sc: SparkContext) -> None:
    ssc = StreamingContext(sc, 1)
    with pytest.raises(ValueError, match="metadata.broker.list"):
        KafkaUtils.createDirectStream(ssc, ["t"], {})
    with pytest.raises(TypeError, match="list of topic names"):
        KafkaUtils.createDirectStream(ssc, "t", {"metadata.broker.list": "127.0.0.1:9"})
    with pytest.raises(ValueError, match="auto.offset.reset"):
        KafkaUtils.createDirectStream(ssc, ["t"], {"metadata.broker.list": "127.0.0.1:9", "auto.offset.reset": "middle"})


def test_kafka_to_redis_with_a_core_sink_via_to_core(tmp_path: Any, kafka_cluster: Any, topic_factory: Any, redis_url: str) -> None:
    """The guide's recipe: non-idempotent writes (HINCRBY) through RedisSink stay exact across restarts."""
    import redis

    from streamkeep.compat.pyspark import to_core
    from streamkeep.sinks import RedisSink

    topic = topic_factory(partitions=2)
    ckpt = str(tmp_path / "ckpt")

    def write(pipe: Any, records: list[Any]) -> None:
        for user, n in records:
            pipe.hincrby("clicks", user, n)

    def setup() -> StreamingContext:
        ssc = StreamingContext(SparkContext.getOrCreate(), 1)
        clicks = KafkaUtils.createDirectStream(ssc, [topic], {"metadata.broker.list": kafka_cluster.bootstrap, "auto.offset.reset": "smallest"})
        counts = clicks.map(lambda kv: (kv[1], 1)).reduceByKey(lambda a, b: a + b)
        to_core(counts).write_to(RedisSink(redis_url, write, name="clicks"))
        ssc.checkpoint(ckpt)
        return ssc

    produce(kafka_cluster.bootstrap, topic, [b"ann", b"bob", b"ann"], partition=lambda i: i % 2)
    run_batches(StreamingContext.getOrCreate(ckpt, setup), 2)
    produce(kafka_cluster.bootstrap, topic, [b"bob", b"cy"], partition=lambda i: i % 2)
    run_batches(StreamingContext.getOrCreate(ckpt, setup), 2)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hgetall("clicks") == {"ann": "2", "bob": "2", "cy": "1"}
    client.close()


def test_direct_stream_takes_name_and_on_error(sc: SparkContext, kafka_cluster: Any, topic_factory: Any, tmp_path: Any) -> None:
    """The SourceError for an undecodable record says to pass on_error=, and name= pins the offsets' key:
    both must be accepted by createDirectStream, as by the other facade sources."""
    topic = topic_factory(partitions=1)
    produce(kafka_cluster.bootstrap, topic, [b"ok1", b"\xff\xfe", b"ok2"])
    ssc = StreamingContext(sc, 1)
    ssc.checkpoint(str(tmp_path / "ckpt"))
    bad: list[Any] = []
    params = {"bootstrap.servers": kafka_cluster.bootstrap, "auto.offset.reset": "smallest"}
    got = _collect(KafkaUtils.createDirectStream(ssc, [topic], params, name="events", on_error=lambda raw, exc: bad.append((raw.offset, type(exc)))))
    run_batches(ssc, 1)
    assert got == [[(None, "ok1"), (None, "ok2")]]
    assert bad == [(1, UnicodeDecodeError)]
    assert list(ssc._ssc._graph.describe()["sources"]) == ["events"]
