"""`KafkaUtils` (``pyspark.streaming.kafka``), which PySpark 3 dropped, over the core Kafka source.

``createDirectStream`` maps onto ``StreamingContext.kafka_stream``: Spark's
direct stream (offset ranges planned per batch, stored with the checkpoint)
is exactly what the core source does, so recovery replays the same records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from streamkeep.compat.pyspark._errors import unsupported
from streamkeep.compat.pyspark._table import quiet_derived_names

log = logging.getLogger("streamkeep.compat.pyspark")

# Kafka 0.8 / ZooKeeper consumer settings that mean nothing to librdkafka: ignored.
_OLD_CONSUMER_KEYS = frozenset(
    {
        "zookeeper.connect",
        "zookeeper.connection.timeout.ms",
        "zookeeper.session.timeout.ms",
        "zookeeper.sync.time.ms",
        "consumer.timeout.ms",
        "auto.commit.enable",
        "auto.commit.interval.ms",
        "rebalance.max.retries",
        "rebalance.backoff.ms",
        "refresh.leader.backoff.ms",
        "fetch.message.max.bytes",
        "socket.receive.buffer.bytes",
        "num.consumer.fetchers",
        "queued.max.message.chunks",
        "serializer.class",
        "key.deserializer",
        "value.deserializer",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
    }
)
_MAPPED_KEYS = frozenset({"metadata.broker.list", "bootstrap.servers", "group.id", "auto.offset.reset"})
_RESETS = {"smallest": "earliest", "earliest": "earliest", "largest": "latest", "latest": "latest"}


def utf8_decoder(s: bytes | None) -> str | None:
    """Decode bytes as UTF-8 (None stays None): PySpark's default key and value decoder."""
    if s is None:
        return None
    return s.decode("utf-8")


class TopicAndPartition:
    """A topic and partition, as the keys of ``fromOffsets``."""

    def __init__(self, topic: str, partition: int) -> None:
        self._topic = topic
        self._partition = partition

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicAndPartition) and (self._topic, self._partition) == (other._topic, other._partition)

    def __hash__(self) -> int:
        return hash((self._topic, self._partition))

    def __repr__(self) -> str:
        return f"TopicAndPartition(topic: {self._topic}, partition: {self._partition})"


class OffsetRange:
    """A range of offsets ``[fromOffset, untilOffset)`` of one topic partition."""

    def __init__(self, topic: str, partition: int, fromOffset: int, untilOffset: int) -> None:
        self.topic = topic
        self.partition = partition
        self.fromOffset = fromOffset
        self.untilOffset = untilOffset

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OffsetRange) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.topic, self.partition, self.fromOffset, self.untilOffset))

    def __repr__(self) -> str:
        return f"OffsetRange(topic: {self.topic}, partition: {self.partition}, range: [{self.fromOffset} -> {self.untilOffset}])"


class Broker:
    """A broker's host and port (accepted for compatibility)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port


class KafkaMessageAndMetadata:
    """What ``messageHandler`` receives: one decoded record with its position."""

    def __init__(self, topic: str, partition: int, offset: int, key: Any, message: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.message = message

    def __repr__(self) -> str:
        return f"KafkaMessageAndMetadata(topic: {self.topic}, partition: {self.partition}, offset: {self.offset}, key: {self.key!r}, message: {self.message!r})"


def _kv(r: Any) -> tuple[Any, Any]:
    return (r.key, r.value)


def _handler(f: Callable[[KafkaMessageAndMetadata], Any]) -> Callable[[Any], Any]:
    return lambda r: f(KafkaMessageAndMetadata(r.topic, r.partition, r.offset, r.key, r.value))


def _starting_offsets(kafka_params: dict[str, Any], from_offsets: dict[Any, int] | None) -> Any:
    if from_offsets:
        out: dict[tuple[str, int], int] = {}
        for tp, off in from_offsets.items():
            if isinstance(tp, TopicAndPartition):
                out[(tp._topic, tp._partition)] = int(off)
            elif isinstance(tp, tuple) and len(tp) == 2:
                out[(str(tp[0]), int(tp[1]))] = int(off)
            else:
                msg = f"createDirectStream: fromOffsets keys must be TopicAndPartition, got {tp!r}"
                raise TypeError(msg)
        return out
    reset = str(kafka_params.get("auto.offset.reset", "largest")).lower()
    if reset not in _RESETS:
        msg = f"createDirectStream: auto.offset.reset={reset!r} must be 'smallest' or 'largest' (or 'earliest'/'latest')"
        raise ValueError(msg)
    return _RESETS[reset]


class KafkaUtils:
    """PySpark 2's Kafka helpers; only the direct stream is supported."""

    @staticmethod
    def createDirectStream(
        ssc: Any,
        topics: list[str],
        kafkaParams: dict[str, Any],
        fromOffsets: dict[Any, int] | None = None,
        keyDecoder: Callable[[bytes | None], Any] = utf8_decoder,
        valueDecoder: Callable[[bytes | None], Any] = utf8_decoder,
        messageHandler: Callable[[KafkaMessageAndMetadata], Any] | None = None,
        *,
        name: str | None = None,
        on_error: Any = None,
    ) -> Any:
        """A stream of ``(key, value)`` pairs (or ``messageHandler``'s results) from `topics`.

        `kafkaParams`: ``metadata.broker.list`` or ``bootstrap.servers`` (required),
        ``group.id`` (offsets are committed to it after each batch, for monitoring),
        ``auto.offset.reset`` ``smallest`` or ``largest`` (the default, as in Spark);
        other librdkafka settings are passed to the consumer. `fromOffsets` maps
        `TopicAndPartition` to the first offset to read. The SparkConf settings
        ``spark.streaming.kafka.maxRatePerPartition`` and
        ``spark.streaming.backpressure.enabled`` apply.

        streamkeep extensions (keyword-only): `name` pins the key of the source's offsets
        in the checkpoint (else derived: ``kafka#1``, ...); `on_error` routes records the
        decoders cannot decode (a callable ``(raw_record, exception)`` or a dead-letter
        sink) instead of failing the batch.
        """
        if not isinstance(topics, (list, tuple, set, frozenset)):
            msg = f"createDirectStream: topics should be a list of topic names, got {type(topics).__name__}"
            raise TypeError(msg)
        if not isinstance(kafkaParams, dict):
            msg = f"createDirectStream: kafkaParams should be a dict, got {type(kafkaParams).__name__}"
            raise TypeError(msg)
        brokers = kafkaParams.get("metadata.broker.list") or kafkaParams.get("bootstrap.servers")
        if not brokers:
            msg = "createDirectStream: kafkaParams must give the brokers as 'metadata.broker.list' or 'bootstrap.servers'"
            raise ValueError(msg)
        ignored = sorted(k for k in kafkaParams if k in _OLD_CONSUMER_KEYS)
        if ignored:
            log.info("createDirectStream: ignoring Kafka 0.8 consumer settings %s", ignored)
        consumer_config = {k: v for k, v in kafkaParams.items() if k not in _MAPPED_KEYS and k not in _OLD_CONSUMER_KEYS}
        conf = ssc.sparkContext.getConf()
        rate = conf.get("spark.streaming.kafka.maxRatePerPartition")
        backpressure = str(conf.get("spark.streaming.backpressure.enabled", "false")).lower() == "true"
        options: dict[str, Any] = {
            "starting_offsets": _starting_offsets(kafkaParams, fromOffsets),
            "group_id": kafkaParams.get("group.id"),
            "consumer_config": consumer_config or None,
            "key_deserializer": keyDecoder,
            "value_deserializer": valueDecoder,
            "backpressure": backpressure,
        }
        if on_error is not None:
            options["on_error"] = on_error
        if rate is not None and float(rate) > 0:
            options["max_rate_per_partition"] = float(rate)
        with quiet_derived_names():
            records = ssc._ssc.kafka_stream(list(topics), bootstrap_servers=str(brokers), name=name, **options)
        mapped = records.map(_kv if messageHandler is None else _handler(messageHandler))
        return ssc._wrap("stream", mapped, "KafkaUtils.createDirectStream")

    @staticmethod
    def createStream(ssc: Any, zkQuorum: str, groupId: str, topics: dict[str, int], *args: Any, **kwargs: Any) -> Any:
        """Not supported: the receiver-based (ZooKeeper) stream; use createDirectStream."""
        unsupported("KafkaUtils.createStream", "the receiver-based ZooKeeper stream is replaced by createDirectStream, which is exact")

    @staticmethod
    def createRDD(sc: Any, kafkaParams: dict[str, Any], offsetRanges: Iterable[OffsetRange], *args: Any, **kwargs: Any) -> Any:
        """Not supported: reading a fixed offset range as a batch job."""
        unsupported("KafkaUtils.createRDD", "batch reads of offset ranges are not available; use createDirectStream with fromOffsets")


__all__ = ["Broker", "KafkaMessageAndMetadata", "KafkaUtils", "OffsetRange", "TopicAndPartition", "utf8_decoder"]
